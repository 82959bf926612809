//! berth-net: the default bridge, veth pairs, IPAM, NAT, published ports and the embedded
//! name server (issue 4). Not written yet.
