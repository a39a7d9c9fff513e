"""Protocol-faithful mining emulators for tests, the live demo and the classifier corpus.

Never real mining and never a real pool: these programs speak the pool protocols with
made-up jobs and shares, bind only to addresses the caller gives (default 127.0.0.1),
and stop by themselves (duration, message budget).

- egress.sim.stratum   StratumPool / StratumClient (Stratum v1; variant "btc" or "ethstratum")
- egress.sim.xmr       CryptoNotePool / CryptoNoteClient (XMRig; variant "xmrig" or "coinhive")
- egress.sim.ethproxy  EthProxyPool / EthProxyClient (eth_submitLogin / getWork / submitWork / submitHashrate)
- egress.sim.stratum_v2  StratumV2ShapePool / StratumV2ShapeClient: only the SHAPE of Stratum v2
                       (64/234-byte handshake, Noise frame sizes, random bytes), not its crypto
- egress.sim.base      common parameters (tls, websocket, duration, max_messages, share_interval,
                       jitter, job_interval, record_path), Record, Channel, WebSocket framing, CLI
- egress.sim.session   run_session(kind, ...): pool + recording relay + miner over loopback -> wire bytes
- egress.sim.tlscert   self-signed certificates made at run time

Each protocol module is also a command: python -m egress.sim.<module> pool|client --help.
"""
