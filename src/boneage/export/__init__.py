"""Export (extra ``train``): Keras -> ONNX with the model card inside, and the registry."""
