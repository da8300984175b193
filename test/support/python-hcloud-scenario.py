"""Drives the emulator with Hetzner's official Python client (Debian python3-hcloud), unmodified.

Reads HCLOUD_ENDPOINT, HCLOUD_TOKEN and SSH_PUBLIC_KEY from the environment (never from argv, so the token does not
show in process lists) and prints one JSON object per step on stdout for the calling test to check. Any exception
ends the script with a non-zero exit code and a traceback on stderr.
"""
import json
import os
import sys

from hcloud import Client
from hcloud.images.domain import Image
from hcloud.locations.domain import Location
from hcloud.server_types.domain import ServerType


def step(name, **values):
    print(json.dumps({"step": name, **values}), flush=True)


def main():
    client = Client(
        token=os.environ["HCLOUD_TOKEN"],
        api_endpoint=os.environ["HCLOUD_ENDPOINT"],
        poll_interval=0.05,
    )
    label = os.environ.get("RUN_LABEL", "python")

    key = client.ssh_keys.create(
        name="python-key", public_key=os.environ["SSH_PUBLIC_KEY"], labels={"run": label}
    )
    step("ssh_key", id=key.id, fingerprint=key.fingerprint)

    created = client.servers.create(
        name="python-server",
        server_type=ServerType(name="cx23"),
        image=Image(name="ubuntu-24.04"),
        location=Location(name="fsn1"),
        ssh_keys=[key],
        start_after_create=False,
        labels={"run": label},
    )
    server = created.server
    created.action.wait_until_finished(max_retries=400)
    for action in created.next_actions:
        action.wait_until_finished(max_retries=400)
    server.reload()
    step(
        "server",
        id=server.id,
        status=server.status,
        ipv4=server.public_net.ipv4.ip,
        ipv6=server.public_net.ipv6.ip,
        # 1.18 models a server's location only through server.datacenter, which the current API no longer
        # sends: this client cannot see where a server is. Report what it sees.
        has_location=hasattr(server.data_model, "location"),
        datacenter=None if server.datacenter is None else server.datacenter.name,
        server_type=server.server_type.name,
    )

    rescue = server.enable_rescue(type="linux64", ssh_keys=[key.id])
    rescue.action.wait_until_finished(max_retries=400)
    power = server.power_on()
    power.wait_until_finished(max_retries=400)
    server.reload()
    step("rescue", status=server.status, rescue_enabled=server.rescue_enabled, password=bool(rescue.root_password))

    shutdown = server.shutdown()
    shutdown.wait_until_finished(max_retries=400)
    for _ in range(400):
        server.reload()
        if server.status == "off":
            break
        import time

        time.sleep(0.05)
    step("off", status=server.status, rescue_enabled=server.rescue_enabled)

    image = server.create_image(description="python snapshot", labels={"run": label, "kind": "nixos"})
    image.action.wait_until_finished(max_retries=400)
    found = client.images.get_all(type=["snapshot"], label_selector="run=%s,kind in (nixos)" % label)
    step(
        "snapshot",
        id=image.image.id,
        found=[i.id for i in found],
        status=[i.status for i in found],
        created_from=[i.created_from.id for i in found],
        disk_size=[i.disk_size for i in found],
    )

    delete = server.delete()
    delete.wait_until_finished(max_retries=400)
    image.image.delete()
    key.delete()
    remaining = client.servers.get_all(label_selector="run=%s" % label)
    keys = client.ssh_keys.get_all(label_selector="run=%s" % label)
    images = client.images.get_all(type=["snapshot"], label_selector="run=%s" % label)
    step("cleanup", servers=len(remaining), ssh_keys=len(keys), images=len(images))


if __name__ == "__main__":
    try:
        main()
    except Exception as err:  # noqa: BLE001 - report anything the client raised, then fail
        import traceback

        traceback.print_exc()
        print(json.dumps({"step": "error", "type": type(err).__name__, "message": str(err)}), flush=True)
        sys.exit(1)
