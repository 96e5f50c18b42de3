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
                                 "s3://bucket/a?session_token=abc", "abfs://container/a?account_key=abc",
                                 "s3://bucket/a?aws_secret_access_key=abc", "s3://bucket/a?X-Amz-Signature=abc",
                                 "s3://bucket/a?X-Amz-Credential=abc", "s3://bucket/a?X-Amz-Security-Token=abc",
                                 "gs://bucket/a?X-Goog-Signature=abc", "s3://bucket/a?AWS_ACCESS_KEY_ID=abc"])
def test_credentials_in_a_uri_are_refused_without_echoing_them(uri):
    with pytest.raises(ConfigError, match="credentials are never taken from a URI") as e:
        storage.resolve(uri)
    assert "secret" not in str(e.value).lower().replace("secret_key", "") and "abc" not in str(e.value)


@pytest.mark.parametrize("uri,endpoint", [("s3://bucket/a", "http://AKID:abc@127.0.0.1:9000"),
                                          ("s3://bucket/a", "http://AKID@127.0.0.1:9000"),
                                          ("s3://bucket/a", "http://127.0.0.1:9000/?X-Amz-Signature=abc"),
                                          ("s3://bucket/a?endpoint_override=http://u:abc@127.0.0.1:9", None)])
def test_credentials_in_an_endpoint_are_refused_without_echoing_them(uri, endpoint):
    with pytest.raises(ConfigError, match="carries credentials") as e:
        storage.resolve(uri, endpoint)
    assert "abc" not in str(e.value) and "AKID" not in str(e.value)


def test_harmless_query_parameters_are_still_accepted():
    loc = storage.resolve("s3://bucket/a?region=eu-west-1&scheme=http&endpoint_override=http://127.0.0.1:9")
    assert storage.s3_options(loc.fs)["region"] == "eu-west-1"


def test_exclusive_create_is_refused_on_a_store_without_a_conditional_write(tmp_path):
    fs = pafs.SubTreeFileSystem(str(tmp_path), pafs.LocalFileSystem())
    with pytest.raises(ConfigError, match="conditional write"):
        storage.create_exclusive(fs, "lock.json", b"")


def test_gcs_emulator_from_the_standard_variable_is_anonymous(monkeypatch):
    monkeypatch.setenv("STORAGE_EMULATOR_HOST", "http://127.0.0.1:4443")
    loc = storage.resolve("gs://bucket/a/b/")
    assert (loc.path, loc.uri) == ("bucket/a/b", "gs://bucket/a/b") and isinstance(loc.fs, pafs.GcsFileSystem)
    options = storage._options(loc.fs)
    assert (options["endpoint_override"], options["scheme"], options["anonymous"]) == ("127.0.0.1:4443", "http", True)
    named = storage._options(storage.resolve("gcs://bucket/a?endpoint_override=127.0.0.1:9&scheme=http").fs)
    assert (named["endpoint_override"], named["anonymous"]) == ("127.0.0.1:9", False)  # the URI's endpoint wins


def test_azure_account_endpoint_and_key_from_the_connection_string_never_shown(monkeypatch):
    key = "c2VjcmV0LWtleS1vZi10aGUtdGVzdA=="
    monkeypatch.delenv("AZURE_STORAGE_ACCOUNT_NAME", raising=False)
    monkeypatch.setenv("AZURE_STORAGE_CONNECTION_STRING", "DefaultEndpointsProtocol=http;AccountName=acct;"
                       f"AccountKey={key};BlobEndpoint=http://127.0.0.1:10000/acct;")
    for uri in ("az://cont/a/b/", "abfs://cont/a/b", "abfss://cont@acct.dfs.core.windows.net/a/b"):
        loc = storage.resolve(uri)
        assert loc.path == "cont/a/b" and loc.uri == f"{uri.split(':')[0]}://cont/a/b", uri
        assert key not in repr(loc) + str(loc)
        options = storage._options(loc.fs)
        assert (options["account_name"], options["blob_storage_authority"], options["blob_storage_scheme"],
                options["account_key"]) == ("acct", "127.0.0.1:10000", "http", key)
    other = storage._options(storage.resolve("abfs://cont@other.dfs.core.windows.net/a").fs)
    assert (other["account_name"], other["account_key"], other["blob_storage_authority"]) == \
        ("other", "", ".blob.core.windows.net")  # another account: Azure's default credential chain


def test_azure_without_an_account_is_a_one_line_error(monkeypatch):
    monkeypatch.delenv("AZURE_STORAGE_CONNECTION_STRING", raising=False)
    monkeypatch.delenv("AZURE_STORAGE_ACCOUNT_NAME", raising=False)
    with pytest.raises(ConfigError, match="which storage account"):
        storage.resolve("az://cont/a")
    monkeypatch.setenv("AZURE_STORAGE_ACCOUNT_NAME", "acct")
    assert storage._options(storage.resolve("az://cont/a").fs)["account_name"] == "acct"


@pytest.mark.parametrize("uri", ["az://cont/a?sv=2024&sig=abc", "gs://bucket/a?access_token=abc",
                                 "gs://user:abc@bucket/a"])
def test_gcs_and_azure_credentials_in_a_uri_are_refused(uri):
    with pytest.raises(ConfigError, match="credentials are never taken from a URI") as e:
        storage.resolve(uri)
    assert "abc" not in str(e.value)


@pytest.mark.parametrize("store,module,extra", [("gs://bucket/x?endpoint_override=127.0.0.1:9&scheme=http",
                                                  "google.api_core.exceptions", "gcs"),
                                                 ("abfs://cont@acct.dfs.core.windows.net/x", "azure.core.exceptions",
                                                  "azure")])
def test_the_lock_on_gcs_and_azure_without_the_sdk_says_what_to_install(store, module, extra, monkeypatch):
    import sys

    monkeypatch.setitem(sys.modules, module, None)  # as if not installed
    loc = storage.resolve(store)
    with pytest.raises(ConfigError, match=rf"pip install 'docscore\[{extra}\]'"):
        storage.create_exclusive(loc.fs, loc.join("lock.json"), b"")



def test_one_cache_root_for_every_cache(monkeypatch, tmp_path):
    from pathlib import Path

    from docscore.files import cache_root

    monkeypatch.delenv("DOCSCORE_CACHE_DIR", raising=False)
    monkeypatch.delenv("DOCSCORE_CACHE", raising=False)
    assert cache_root() == Path.home() / ".cache" / "docscore"
    monkeypatch.setenv("DOCSCORE_CACHE", str(tmp_path / "old"))
    assert cache_root() == tmp_path / "old"
    monkeypatch.setenv("DOCSCORE_CACHE_DIR", str(tmp_path / "new"))
    assert cache_root() == tmp_path / "new"
