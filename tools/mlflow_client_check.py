"""Drives keel's registry REST API with the official MLflow client (mlflow-skinny).

Usage: python mlflow_client_check.py BASE_URL MODEL_PATH_1 MODEL_PATH_2
Exits non-zero (with a traceback) on the first check that fails; prints "ok" at the end.
Run by tests/mlflow_client.rs with KEEL_MLFLOW_PYTHON pointing at a python with mlflow.
"""
import sys

from mlflow import MlflowClient
from mlflow.exceptions import MlflowException

base, path1, path2 = sys.argv[1:4]
c = MlflowClient(tracking_uri=base, registry_uri=base)

m = c.create_registered_model("summarizer", tags={"team": "nlp"}, description="bulk summaries")
assert m.name == "summarizer", m
assert m.tags == {"team": "nlp"}, m.tags
try:
    c.create_registered_model("summarizer")
    raise AssertionError("a second create must fail")
except MlflowException as e:
    assert e.error_code == "RESOURCE_ALREADY_EXISTS", e.error_code

v1 = c.create_model_version("summarizer", source=path1, tags={"stage": "dev"})
v2 = c.create_model_version("summarizer", source=path2)
assert (v1.version, v2.version) in [("1", "2"), (1, 2)], (v1.version, v2.version)
assert v1.status == "READY", v1.status
assert v1.tags == {"stage": "dev"}, v1.tags

c.set_registered_model_alias("summarizer", "champion", "1")
assert str(c.get_model_version_by_alias("summarizer", "champion").version) == "1"
c.set_registered_model_alias("summarizer", "champion", "2")
mv = c.get_model_version_by_alias("summarizer", "champion")
assert str(mv.version) == "2" and "champion" in mv.aliases, mv
rm = c.get_registered_model("summarizer")
assert rm.aliases == {"champion": "2"} or rm.aliases == {"champion": 2}, rm.aliases

try:
    c.set_registered_model_alias("summarizer", "latest", "1")
    raise AssertionError("alias 'latest' is reserved")
except MlflowException as e:
    assert e.error_code == "INVALID_PARAMETER_VALUE", e.error_code

c.set_model_version_tag("summarizer", "2", "validated", "yes")
c.delete_model_version_tag("summarizer", "2", "missing")  # no-op
found = c.search_model_versions("name='summarizer' and tags.validated='yes'")
assert [str(v.version) for v in found] == ["2"], found
models = c.search_registered_models(filter_string="name LIKE 'summ%'")
assert [x.name for x in models] == ["summarizer"], models

c.delete_model_version("summarizer", "2")
try:
    c.get_model_version("summarizer", "2")
    raise AssertionError("a deleted version is gone")
except MlflowException as e:
    assert e.error_code == "RESOURCE_DOES_NOT_EXIST", e.error_code
try:
    c.get_model_version_by_alias("summarizer", "champion")
    raise AssertionError("the alias went with its version")
except MlflowException as e:
    assert e.error_code in ("RESOURCE_DOES_NOT_EXIST", "INVALID_PARAMETER_VALUE"), e.error_code
v3 = c.create_model_version("summarizer", source=path1)
assert str(v3.version) == "3", v3.version  # never reused

c.delete_registered_model("summarizer")
print("ok")
