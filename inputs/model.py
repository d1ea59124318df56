"""A small Keras classifier in MLaaS4HEP's form: model(idim) returns a compiled model."""


def model(idim):
    """Input(idim) -> Dense(16, relu) -> Dense(1, sigmoid), for binary labels."""
    try:
        from tensorflow import keras
    except ImportError:
        import keras

    inputs = keras.Input(shape=(idim,))
    hidden = keras.layers.Dense(16, activation="relu")(inputs)
    output = keras.layers.Dense(1, activation="sigmoid")(hidden)
    clf = keras.Model(inputs=inputs, outputs=output)
    clf.compile(optimizer="adam", loss="binary_crossentropy", metrics=["accuracy"])
    return clf
