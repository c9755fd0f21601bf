"""The OpenAPI description matches the app: same routes and methods, and what the app
answers (status, content type, JSON body) is what the description promises."""

from __future__ import annotations

import re

import jsonschema
import pytest
from openapi_spec_validator import validate

from recommender.serving.app import openapi_spec
from tests.unit.test_serving_app import world  # noqa: F401 - the fixture

IGNORED_METHODS = {"HEAD", "OPTIONS"}


def _flask_routes(app) -> set[tuple[str, str]]:
    """(OpenAPI path template, METHOD) of every Flask rule."""
    out = set()
    for rule in app.url_map.iter_rules():
        if rule.endpoint == "static":
            continue
        path = re.sub(r"<(?:[a-z]+:)?([a-z_]+)>", r"{\1}", rule.rule)
        path = path.replace("{raw}", "{userid}")
        if path == "/recommend":  # the empty-id rule: same operation, answers 400
            path = "/recommend/{userid}"
        for method in rule.methods - IGNORED_METHODS:
            out.add((path, method))
    return out


def test_the_description_is_valid_openapi():
    validate(openapi_spec())


def test_every_route_is_described_and_every_description_is_a_route(world):  # noqa: F811 - the fixture imported above
    client, _, _ = world
    spec = openapi_spec()
    described = {(path, method.upper()) for path, ops in spec["paths"].items() for method in ops}
    assert _flask_routes(client.application) == described


def _resolve(spec: dict, obj: dict) -> dict:
    while "$ref" in obj:
        node = spec
        for part in obj["$ref"].removeprefix("#/").split("/"):
            node = node[part]
        obj = node
    return obj


ADMIN = {"Authorization": "Bearer s3cret"}
CALLS = [
    ("/recommend/{userid}", "get", "/recommend/7", {}),
    ("/recommend/{userid}", "get", "/recommend/abc", {}),
    ("/health", "get", "/health", {}),
    ("/ready", "get", "/ready", {}),
    ("/metrics", "get", "/metrics", {}),
    ("/provenance/{request_id}", "get", "/provenance/" + "0" * 32, {}),
    ("/provenance", "get", "/provenance?user=7", {}),
    ("/provenance", "get", "/provenance?user=x", {}),
    ("/admin/experiment", "get", "/admin/experiment", ADMIN),
    ("/admin/experiment", "get", "/admin/experiment", {}),
    ("/admin/reload", "post", "/admin/reload", ADMIN),
    ("/openapi.json", "get", "/openapi.json", {}),
]


@pytest.mark.parametrize(("template", "method", "url", "headers"), CALLS)
def test_answers_match_their_description(world, template, method, url, headers):  # noqa: F811 - the fixture
    client, _, _ = world
    client.get("/recommend/7")  # something served, for /provenance?user=7
    spec = openapi_spec()
    response = client.open(url, method=method.upper(), headers=headers)
    described = spec["paths"][template][method]["responses"]
    assert str(response.status_code) in described, f"{url} answered an undocumented {response.status_code}"
    documented = _resolve(spec, described[str(response.status_code)])
    assert response.mimetype in documented["content"]
    schema = documented["content"][response.mimetype]["schema"]
    if response.mimetype == "application/json":
        jsonschema.validate(response.json, {**schema, "components": spec["components"]},
                            cls=jsonschema.Draft202012Validator)
    elif "pattern" in schema:
        assert re.fullmatch(schema["pattern"], response.get_data(as_text=True))


def test_provenance_body_matches_the_explanation_schema(world):  # noqa: F811 - the fixture imported above
    client, _, _ = world
    rid = client.get("/recommend/7").headers["X-Request-Id"]
    spec = openapi_spec()
    schema = {"$ref": "#/components/schemas/Explanation", "components": spec["components"]}
    body = client.get(f"/provenance/{rid}").json
    jsonschema.validate(body, schema, cls=jsonschema.Draft202012Validator)
    body["served"].pop("items")
    with pytest.raises(jsonschema.ValidationError):
        jsonschema.validate(body, schema, cls=jsonschema.Draft202012Validator)
