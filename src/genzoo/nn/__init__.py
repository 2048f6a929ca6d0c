"""Plain networks: tensors in, tensors out. The probabilistic models take them as parts."""

