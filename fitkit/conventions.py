"""Keras's small conventions that losses and metrics share: EPSILON, keras.backend.epsilon(), and the
snake_case name a class name becomes.

A leaf: it imports nothing of fitkit, so :mod:`fitkit.losses` and :mod:`fitkit.metrics` can both use it.

>>> snake_case("MeanSquaredError")
'mean_squared_error'
>>> snake_case("MSELoss"), snake_case("MSELoss", acronyms_as_words=False)
('mse_loss', 'mseloss')
"""

import re

__all__ = ["EPSILON", "snake_case"]

EPSILON = 1e-7  # keras.backend.epsilon(): Keras clamps and divides with it, so matching values need the same


def snake_case(name, acronyms_as_words=True):
    """The default name of an object of class ``name``: "MeanSquaredError" -> "mean_squared_error".

    ``acronyms_as_words=True`` (what metrics name themselves with, close to Keras's ``to_snake_case``):
    an acronym is a word of its own, "MSELoss" -> "mse_loss", "TopKCategoricalAccuracy" ->
    "top_k_categorical_accuracy". ``False`` (what losses name themselves with): an underscore goes only
    before a capital that follows a non-capital, "MSELoss" -> "mseloss". Both give the same name to a
    class name without an acronym ("F1Score" -> "f1_score", "AUC" -> "auc"); the two rules are kept
    because the names they make are visible (log keys, ``loss.name``) and changing either renames
    users' unnamed metrics or losses.
    """
    if acronyms_as_words:
        name = re.sub(r"(.)([A-Z][a-z]+)", r"\1_\2", name)
        return re.sub(r"([a-z0-9])([A-Z])", r"\1_\2", name).lower()
    out = []
    for i, c in enumerate(name):
        if c.isupper() and i and not name[i - 1].isupper():
            out.append("_")
        out.append(c.lower())
    return "".join(out)
