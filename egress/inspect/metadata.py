"""Contact with cloud instance-metadata services (category "metadata").

Not a stream detector: the engine calls `metadata_detection(flow)` once when a flow
starts (the server address is all it needs) and may call it again when facts arrive
(an HTTP Host naming the metadata service through a proxy). Pure, never raises.

Addresses (packed, compared as bytes):
- 169.254.169.254: AWS EC2 IMDS, GCP, Azure IMDS, OpenStack, DigitalOcean, Oracle
  Cloud (current), Hetzner, Linode, Vultr, Scaleway-less clouds alike;
- fd00:ec2::254: AWS IMDS over IPv6 (Nitro instances);
- 169.254.170.2: AWS ECS task metadata and container credentials endpoint;
- 100.100.100.200: Alibaba Cloud ECS metadata;
- 192.0.0.192: Oracle Cloud classic metadata.
Names: metadata.google.internal and metadata.azure.com style names in an HTTP Host
header or a DNS question (the policy should see the attempt even if DNS fails).
Deliberately excluded: 168.63.129.16 (Azure WireServer, also Azure's DNS resolver:
flagging it would flag every DNS query of an Azure sandbox) and 169.254.169.253
(AWS DNS resolver) / 169.254.169.123 (AWS time sync).
"""
from __future__ import annotations

import ipaddress

from egress.types import Detection

METADATA_ADDRESSES = {
    ipaddress.ip_address("169.254.169.254").packed: "imds",
    ipaddress.ip_address("fd00:ec2::254").packed: "aws-imds-v6",
    ipaddress.ip_address("169.254.170.2").packed: "aws-ecs-task-metadata",
    ipaddress.ip_address("100.100.100.200").packed: "alibaba-metadata",
    ipaddress.ip_address("192.0.0.192").packed: "oracle-classic-metadata",
}
METADATA_NAMES = frozenset({"metadata.google.internal", "metadata.goog", "metadata", "instance-data",
                            "instance-data.ec2.internal", "metadata.tencentyun.com"})


def metadata_detection(flow) -> Detection | None:
    """A "metadata" detection if the flow's server is a cloud metadata endpoint, else None."""
    try:
        server_ip = flow.server_ip
        # bytes() only for another buffer type: a flow's address is bytes already
        service = METADATA_ADDRESSES.get(server_ip if type(server_ip) is bytes else bytes(server_ip))
        if service is not None:
            return Detection("metadata", "metadata.cloud_endpoint",
                             {"address": flow.dest_ip, "service": service, "dest_port": flow.server_port})
        facts = flow.facts
        if not facts:                # a new flow: no name to look at yet
            return None
        for key in ("http.host", "dns.query", "tls.sni"):
            name = facts.get(key)
            if isinstance(name, str) and name.lower().rstrip(".") in METADATA_NAMES:
                return Detection("metadata", "metadata.cloud_name", {"source": key, "name": name[:128]})
    except Exception:                # never raises: a malformed flow is simply not metadata
        return None
    return None
