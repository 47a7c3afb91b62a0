//! Head detection: previous-token, duplicate-token and induction scores.
