//! OV and QK circuits and Q-, K-, V-composition scores (Elhage et al. 2021).
