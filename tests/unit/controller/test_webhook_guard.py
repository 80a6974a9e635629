"""The SSRF rule for webhook deliveries, and the guarded connector against a real server
on loopback: a name resolving to a refused address is never connected to."""

from __future__ import annotations

import ipaddress
from collections.abc import AsyncIterator

import aiohttp
import pytest
from aiohttp import web
from aiohttp.test_utils import TestServer

from asyncjobs.controller import webhook_guard
from asyncjobs.controller.webhook_guard import AddressRefused, address_refused, literal_refused


@pytest.mark.parametrize(
    ("address", "always", "private"),
    [
        ("169.254.169.254", True, True),  # the cloud metadata service
        ("169.254.10.1", True, True),
        ("fe80::1", True, True),
        ("100.100.100.200", True, True),
        ("fd00:ec2::254", True, True),
        ("::ffff:169.254.169.254", True, True),
        ("0.0.0.0", True, True),  # noqa: S104 - an address judged, not bound
        ("224.0.0.1", True, True),
        ("127.0.0.1", False, True),
        ("::1", False, True),
        ("::ffff:127.0.0.1", False, True),
        ("10.1.2.3", False, True),
        ("172.16.0.1", False, True),
        ("192.168.1.1", False, True),
        ("100.64.0.1", False, True),
        ("fd12::1", False, True),
        ("93.184.216.34", False, False),
        ("2606:4700::1111", False, False),
    ],
)
def test_which_addresses_a_delivery_may_reach(address: str, always: bool, private: bool) -> None:
    ip = ipaddress.ip_address(address)
    assert (address_refused(ip, allow_private_network=True) is not None) is always
    assert (address_refused(ip, allow_private_network=False) is not None) is private


def test_an_address_literal_host_is_judged_and_a_name_left_to_the_resolver() -> None:
    assert literal_refused("[::1]", allow_private_network=False) is not None
    assert literal_refused("169.254.169.254", allow_private_network=True) is not None
    assert literal_refused("hooks.example.com", allow_private_network=False) is None


@pytest.fixture
async def receiver() -> AsyncIterator[TestServer]:
    app = web.Application()

    async def hook(_request: web.Request) -> web.Response:
        return web.Response(status=204)

    app.router.add_post("/hook", hook)
    async with TestServer(app, host="127.0.0.1") as server:
        yield server


async def test_a_name_resolving_to_loopback_is_refused_at_connect_time(
    receiver: TestServer,
) -> None:
    url = f"http://localhost:{receiver.port}/hook"
    connector = webhook_guard.connector(allow_private_network=False)
    async with aiohttp.ClientSession(connector=connector) as session:
        with pytest.raises(aiohttp.ClientConnectorError) as refused:
            await session.post(url, data=b"{}")
    assert isinstance(refused.value.os_error, AddressRefused)
    assert "allowed only with allow_private_network" in str(refused.value.os_error)


async def test_the_same_name_connects_when_private_networks_are_allowed(
    receiver: TestServer,
) -> None:
    url = f"http://localhost:{receiver.port}/hook"
    connector = webhook_guard.connector(allow_private_network=True)
    async with (
        aiohttp.ClientSession(connector=connector) as session,
        session.post(url, data=b"{}") as response,
    ):
        assert response.status == 204


def test_deliveries_refuse_tls_older_than_1_2() -> None:
    assert webhook_guard.tls_context().minimum_version.name == "TLSv1_2"
