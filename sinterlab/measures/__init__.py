"""Classical microstructure measures beside the deep features (porosity, pore and solid size,
chord and correlation lengths), per image, cached, and compared with the process parameter."""
