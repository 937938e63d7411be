"""The registry and the config layer agree on the built-in models (issue #18)."""


def test_the_config_layer_knows_every_registered_model_by_name():
    from rayfed.models.registry import MODELS
    from rayfed.models.spec import MODEL_NAMES

    assert sorted(MODEL_NAMES) == sorted(MODELS)
