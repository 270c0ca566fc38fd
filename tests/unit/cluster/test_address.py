from __future__ import annotations

import pytest

from airflow_ray.cluster.address import AddressKind, ClusterAddress
from airflow_ray.exceptions import RayConfigurationError


@pytest.mark.parametrize(
    ("address", "port", "kind", "host", "expected_port", "init_address"),
    [
        ("10.0.0.5", None, AddressKind.GCS, "10.0.0.5", 6379, "10.0.0.5:6379"),
        ("head:7000", None, AddressKind.GCS, "head", 7000, "head:7000"),
        ("head", 6380, AddressKind.GCS, "head", 6380, "head:6380"),
        ("head:7000", 6380, AddressKind.GCS, "head", 7000, "head:7000"),
        ("ray://head", None, AddressKind.CLIENT, "head", 10001, "ray://head:10001"),
        ("RAY://head:10002/", None, AddressKind.CLIENT, "head", 10002, "ray://head:10002"),
        ("ray://head", 10005, AddressKind.CLIENT, "head", 10005, "ray://head:10005"),
        ("  auto ", None, AddressKind.AUTO, None, None, "auto"),
    ],
)
def test_parse(address, port, kind, host, expected_port, init_address):
    parsed = ClusterAddress.parse(address, port)
    assert (parsed.kind, parsed.host, parsed.port) == (kind, host, expected_port)
    assert parsed.ray_init_address() == init_address
    assert str(parsed) == init_address


@pytest.mark.parametrize("address", [None, "", "local", "LOCAL", "embedded"])
def test_empty_or_local_means_embedded(address):
    parsed = ClusterAddress.parse(address)
    assert parsed.is_embedded
    assert str(parsed) == "local (embedded cluster)"
    with pytest.raises(RayConfigurationError):
        parsed.ray_init_address()


@pytest.mark.parametrize(
    ("address", "port", "message"),
    [
        ("tcp://head:8265", None, "unknown scheme"),
        ("head:port", None, "invalid port 'port'"),
        ("head:70000", None, "invalid port '70000'"),
        ("head", -1, "invalid port '-1'"),
        ("head:0", None, "invalid port '0'"),
        ("ray://:10001", None, "no valid host"),
        ("my head", None, "no valid host"),
    ],
)
def test_bad_addresses_name_the_value(address, port, message):
    with pytest.raises(RayConfigurationError, match=message) as info:
        ClusterAddress.parse(address, port)
    assert repr(address) in str(info.value)


@pytest.mark.parametrize(("address", "expected"), [("head", "head:6379"), ("ray://head", "ray://head:10001")])
def test_a_port_of_zero_is_no_port(address, expected):
    # What Airflow's UI posts to test a connection saved without a port: Number(null) == 0.
    assert ClusterAddress.parse(address, 0).ray_init_address() == expected
    assert ClusterAddress.parse(None, 0).is_embedded


@pytest.mark.parametrize(
    ("address", "url"),
    [
        ("http://head:8265", "http://head:8265"),
        ("http://head", "http://head:8265"),
        ("https://ray.example.com", "https://ray.example.com:443"),
        ("https://ray.example.com/", "https://ray.example.com:443"),
        ("https://ray.example.com/ray/", "https://ray.example.com:443/ray"),
        ("https://ray.example.com:8443/teams/ml/ray", "https://ray.example.com:8443/teams/ml/ray"),
        ("HTTP://head:8265/ray/#/jobs", "http://head:8265/ray"),
    ],
)
def test_a_dashboard_keeps_its_path_and_https_defaults_to_443(address, url):
    parsed = ClusterAddress.parse(address)
    assert parsed.kind is AddressKind.DASHBOARD
    assert parsed.dashboard_url == url == str(parsed)
