//! Attribution patching: (a_clean - a_corrupt) · d metric / d a, from two forwards and one backward.
