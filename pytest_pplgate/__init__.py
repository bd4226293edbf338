"""pytest plugin of pplgate: one test per (case, device, precision), checked against golden JSON."""
