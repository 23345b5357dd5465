"""Training (extra ``train``): TensorFlow and Keras are imported only inside this package."""
