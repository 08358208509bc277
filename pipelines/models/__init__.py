"""The models: which exist (the registry, with each one's kind), how each kind is loaded and cached (shared by every
request, read-only), the noise-aware classifier, the device, and the measured cost of a U-Net evaluation."""
