"""Running a verified bundle: the TFLite runtime, model loading, serving with input
validation and a shadow challenger, the window accumulator and the native hot path."""
