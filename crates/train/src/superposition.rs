//! Toy Models of Superposition (Elhage et al. 2022): many instances trained as one batched model.
