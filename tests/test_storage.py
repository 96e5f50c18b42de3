"""URIs → file systems: schemes, endpoints, and no credentials accepted from a URI."""

from __future__ import annotations

import pyarrow.fs as pafs
import pytest

from docscore import storage
from docscore.errors import ConfigError


def test_local_paths_and_file_uris_are_the_local_disk(tmp_path):
    for uri in (str(tmp_path), f"file://{tmp_path}"):
        loc = storage.resolve(uri)
        assert loc.is_local and loc.path == str(tmp_path) and loc.uri == str(tmp_path)


def test_s3_endpoint_from_query_option_or_environment(monkeypatch):
    monkeypatch.delenv("AWS_ENDPOINT_URL", raising=False)
    loc = storage.resolve("s3://bucket/a/b/?endpoint_override=http://127.0.0.1:9", "http://127.0.0.1:8")
    assert (loc.path, loc.uri) == ("bucket/a/b", "s3://bucket/a/b")  # the query is not part of the URI shown
    assert storage.s3_options(loc.fs)["endpoint_override"] == "http://127.0.0.1:9"
    assert storage.s3_options(storage.resolve("s3://bucket/a", "http://127.0.0.1:8").fs)["endpoint_override"] \
        == "http://127.0.0.1:8"
    monkeypatch.setenv("AWS_ENDPOINT_URL", "http://127.0.0.1:7")
    options = storage.s3_options(storage.resolve("s3://bucket/a").fs)
    assert options["endpoint_override"] == "http://127.0.0.1:7" and options["allow_bucket_creation"] is False


@pytest.mark.parametrize("uri", ["s3://key:secret@bucket/a", "s3://AKIDSECRET@bucket/a", "s3://bucket/a?secret_key=abc",
                                 "s3://bucket/a?session_token=abc", "abfs://container/a?account_key=abc"])
def test_credentials_in_a_uri_are_refused_without_echoing_them(uri):
    with pytest.raises(ConfigError, match="credentials are never taken from a URI") as e:
        storage.resolve(uri)
    assert "secret" not in str(e.value).lower().replace("secret_key", "") and "abc" not in str(e.value)


def test_exclusive_create_is_refused_on_a_store_without_a_conditional_write(tmp_path):
    fs = pafs.SubTreeFileSystem(str(tmp_path), pafs.LocalFileSystem())
    with pytest.raises(ConfigError, match="conditional write"):
        storage.create_exclusive(fs, "lock.json", b"")
