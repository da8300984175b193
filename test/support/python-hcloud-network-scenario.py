"""Drives the emulator's firewalls, networks, placement groups, volumes and primary IPs with Hetzner's official Python
client (Debian python3-hcloud), unmodified: a server is replaced by another that keeps its IP.

Reads HCLOUD_ENDPOINT and HCLOUD_TOKEN from the environment and prints one JSON object per step on stdout for the
calling test to check. Any exception ends the script with a non-zero exit code and a traceback on stderr.
"""
import json
import os
import sys

from hcloud import APIException, Client
from hcloud.datacenters.domain import Datacenter
from hcloud.firewalls.domain import FirewallResource, FirewallResourceLabelSelector, FirewallRule
from hcloud.images.domain import Image
from hcloud.locations.domain import Location
from hcloud.networks.domain import NetworkSubnet
from hcloud.server_types.domain import ServerType
from hcloud.servers.domain import ServerCreatePublicNetwork


def step(name, **values):
    print(json.dumps({"step": name, **values}), flush=True)


def wait(*actions):
    for action in actions:
        if action is not None:
            action.wait_until_finished(max_retries=400)


def main():
    client = Client(
        token=os.environ["HCLOUD_TOKEN"], api_endpoint=os.environ["HCLOUD_ENDPOINT"], poll_interval=0.05
    )

    fw = client.firewalls.create(
        name="py-fw",
        rules=[FirewallRule(direction="in", protocol="tcp", port="22", source_ips=["0.0.0.0/0", "::/0"])],
        resources=[
            FirewallResource(
                type="label_selector", label_selector=FirewallResourceLabelSelector(selector="app=py")
            )
        ],
        labels={"run": "py"},
    )
    wait(*fw.actions)
    net = client.networks.create(
        name="py-net",
        ip_range="10.1.0.0/16",
        subnets=[NetworkSubnet(ip_range="10.1.1.0/24", network_zone="eu-central", type="cloud")],
    )
    group = client.placement_groups.create(name="py-spread", type="spread").placement_group
    step("created", firewall=fw.firewall.id, network=net.id, placement_group=group.id)

    first = client.servers.create(
        name="py-a",
        server_type=ServerType(name="cx23"),
        image=Image(name="ubuntu-24.04"),
        location=Location(name="fsn1"),
        networks=[net],
        placement_group=group,
        start_after_create=False,
        labels={"app": "py"},
    )
    wait(first.action, *first.next_actions)
    a = client.servers.get_by_id(first.server.id)
    ipv4 = a.public_net.primary_ipv4
    step(
        "server_a",
        id=a.id,
        firewalls=[f.firewall.id for f in a.public_net.firewalls],
        private_ips=[p.ip for p in a.private_net],
        placement_group=a.placement_group.id if a.placement_group else None,
        group_servers=client.placement_groups.get_by_id(group.id).servers,
        ip=a.public_net.ipv4.ip,
        primary_ipv4=ipv4.id,
    )

    # Keep the IP beyond the server, attach a volume, grow it, detach it.
    client.primary_ips.update(ipv4, auto_delete=False)
    vol = client.volumes.create(size=10, name="py-vol", location=Location(name="fsn1"), format="xfs")
    wait(vol.action, *vol.next_actions)
    wait(vol.volume.attach(a))
    attached = client.volumes.get_by_id(vol.volume.id)
    wait(attached.resize(20))
    wait(attached.detach())
    vol_after = client.volumes.get_by_id(vol.volume.id)
    step("volume", attached_to=attached.server.id if attached.server else None, size=vol_after.size,
         server=vol_after.server, format=vol_after.format, linux_device=vol_after.linux_device)

    wait(a.delete())
    kept = client.primary_ips.get_by_id(ipv4.id)
    step("ip_kept", ip=kept.ip, assignee_id=kept.assignee_id, auto_delete=kept.auto_delete)

    second = client.servers.create(
        name="py-b",
        server_type=ServerType(name="cx23"),
        image=Image(name="ubuntu-24.04"),
        public_net=ServerCreatePublicNetwork(ipv4=kept, enable_ipv6=False),
        labels={"app": "py"},
    )
    wait(second.action, *second.next_actions)
    b = client.servers.get_by_id(second.server.id)
    wait(b.change_dns_ptr(b.public_net.ipv4.ip, "py-b.example.com"))
    wait(b.enable_backup())
    wait(b.rebuild(Image(name="debian-12")))
    b = client.servers.get_by_id(b.id)
    step(
        "server_b",
        ip=b.public_net.ipv4.ip,
        ipv6=b.public_net.ipv6.ip if b.public_net.ipv6 else None,
        dns_ptr=b.public_net.ipv4.dns_ptr,
        backup_window=b.backup_window,
        image=b.image.name,
        status=b.status,
        firewalls=[f.firewall.id for f in b.public_net.firewalls],
    )

    refused = {}
    for name, call in (
        ("floating_ips", lambda: client.floating_ips.get_all()),
        ("load_balancer", lambda: client.load_balancers.get_by_id(7)),
        # 1.18 always sends `datacenter`, removed from the current API: refused (the client's age decides).
        (
            "primary_ip_datacenter",
            lambda: client.primary_ips.create(type="ipv4", name="old", datacenter=Datacenter(name="fsn1-dc14")),
        ),
    ):
        try:
            call()
            refused[name] = None
        except APIException as err:
            refused[name] = {"code": err.code, "message": err.message}
    step("refused", **refused)

    wait(b.delete())
    client.primary_ips.delete(kept)
    client.volumes.delete(vol_after)
    client.networks.delete(net)
    # A firewall applied through a label selector is in use until the selector is removed.
    wait(*client.firewalls.remove_from_resources(fw.firewall, fw.firewall.applied_to))
    client.firewalls.delete(fw.firewall)
    client.placement_groups.delete(group)
    step(
        "cleanup",
        servers=len(client.servers.get_all()),
        primary_ips=len(client.primary_ips.get_all()),
        volumes=len(client.volumes.get_all()),
        networks=len(client.networks.get_all()),
        firewalls=len(client.firewalls.get_all()),
        placement_groups=len(client.placement_groups.get_all()),
    )


if __name__ == "__main__":
    try:
        main()
    except Exception as err:  # noqa: BLE001 - report anything the client raised, then fail
        import traceback

        traceback.print_exc()
        print(json.dumps({"step": "error", "type": type(err).__name__, "message": str(err)}), flush=True)
        sys.exit(1)
