"""Real mining protocol messages (and hard negatives) as transcripts, for the mining detector tests.

Sources: the Stratum v1 examples of the Slush Pool / Braiins protocol documentation,
the NiceHash EthereumStratum/1.0.0 specification, BIP 310 (mining.configure), XMRig's
pool protocol, and payload lines of the public captures in ../shared/pcaps (nDPI's
mining.pcapng, peafowl's stratum/monero/ethereum/ethereum-js-http/bitcoin captures),
shortened where noted. A transcript is a list of (direction, bytes), 0 = to server.
"""
from __future__ import annotations

import random

C, S = 0, 1

# --- Stratum v1 (Slush Pool documentation example session) ---------------------------------
STRATUM_BTC = [
    (C, b'{"id": 1, "method": "mining.subscribe", "params": []}\n'),
    (S, b'{"id": 1, "result": [ [ ["mining.set_difficulty", "b4b6693b72a50c7116db18d6497cac52"], '
        b'["mining.notify", "ae6812eb4cd7735a302a8a9dd95cf71f"]], "08000002", 4], "error": null}\n'),
    (C, b'{"params": ["slush.miner1", "password"], "id": 2, "method": "mining.authorize"}\n'),
    (S, b'{"error": null, "id": 2, "result": true}\n'),
    (S, b'{"params": ["bf", "4d16b6f85af6e2198f44ae2a6de67f78487ae5611b77c6c0440b921e00000000", '
        b'"01000000010000000000000000000000000000000000000000000000000000000000000000ffffffff20020862062f5032'
        b'53482f04b8864e5008", "072f736c7573682f000000000100f2052a010000001976a914d23fcdf86f7e756a64a7a9688e'
        b'f9903327048ed988ac00000000", [], "00000002", "1c2ac4af", "504e86b9", false], "id": null, '
        b'"method": "mining.notify"}\n'),
    (C, b'{"params": ["slush.miner1", "bf", "00000001", "504e86ed", "b2957c02"], "id": 4, '
        b'"method": "mining.submit"}\n'),
    (S, b'{"error": null, "id": 4, "result": true}\n'),
]

# --- ZCash Stratum from peafowl stratum.pcap / nDPI mining.pcapng (Equihash solution cut) ----
STRATUM_ZCASH = [
    (C, b'{"id":1,"method":"mining.subscribe","params":["EWBF 0.3.4b",null,"eu1-zcash.flypool.org","3333"]}\n'
        b'{"id":2,"method":"mining.authorize","params":["t1fAhZF5aUJdY7CikGULHmeYk7id8qmvbAd.rig4","x"]}\n'
        b'{"id":3,"method":"mining.extranonce.subscribe","params":[]}\n'),
    (S, b'{"id":1,"result":["04d567b212", "04d567b212"], "error": null}\n'
        b'{"id":2,"result":true, "error": null}\n'
        b'{"id":null,"method":"mining.set_target","params":["0004189374bc6a7ef9db22d0e5604189374bc6a7ef9db22d0e5'
        b'604189374bc6a"]}\n'
        b'{"id":null,"method":"mining.notify","params":["8c6f2d4c6d2c7014fb26","04000000","9e2fc768bd19775'
        b'28c8d6096d46376758179e25bf3293428b65f120100000000","35d341a8b19a38cd584cb5494185b4dbf1a7eaa91a9ff65'
        b'41e851de50cbc88a2","0000000000000000000000000000000000000000000000000000000000000000","a9cc405a",'
        b'"09d8151c",true]}\n'),
    (C, b'{"id":100,"method":"mining.submit","params":["t1fAhZF5aUJdY7CikGULHmeYk7id8qmvbAd.rig4",'
        b'"8c6f2d4c6d2c7014fb26","a9cc405a","3e2700000000000000000000000000000000000000000000000000",'
        b'"fd400500175f90a42059650b66c04348ca157a2f48f7763b2627062b573bc29df8cb584e29cc5c776e12ff4f"]}\n'),
    (S, b'{"id":100,"result":true}\n'),
]

# --- EthereumStratum/1.0.0 (NiceHash specification) ------------------------------------------
ETHSTRATUM = [
    (C, b'{"id": 1, "method": "mining.subscribe", "params": ["MinerName/1.0.0", "EthereumStratum/1.0.0"]}\n'),
    (S, b'{"id": 1, "result": [["mining.notify", "ae6812eb4cd7735a302a8a9dd95cf71f", "EthereumStratum/1.0.0"], '
        b'"080c"], "error": null}\n'),
    (C, b'{"id": 2, "method": "mining.authorize", "params": ["username", "password"]}\n'),
    (S, b'{"id": 2, "result": true, "error": null}\n'),
    (S, b'{"id": null, "method": "mining.set_difficulty", "params": [0.5]}\n'),
    (S, b'{"id": null, "method": "mining.notify", "params": ["bf0488aa", "abad8f99f3918bf903c6a909d9bbc0fdfa5a2f4'
        b'b9cb1196175ec825c6610126c", "645cf20198c2f3861e947d4f67e3ab63b7b2e24dcc9095bd9123e7b33371f6cc", true]}\n'),
    (C, b'{"id": 244, "method": "mining.submit", "params": ["username", "bf0488aa", "6a909d9bbc0f"]}\n'),
]

# --- BIP 310 mining.configure ------------------------------------------------------------------
CONFIGURE = [
    (C, b'{"method": "mining.configure", "id": 1, "params": [["minimum-difficulty", "version-rolling"], '
        b'{"minimum-difficulty.value": 2048, "version-rolling.mask": "1fffe000", '
        b'"version-rolling.min-bit-count": 2}]}\n'),
    (S, b'{"error": null, "id": 1, "result": {"version-rolling": true, "version-rolling.mask": "18000000", '
        b'"minimum-difficulty": true}}\n'),
]

# --- CryptoNote: xmr-stak session from peafowl monero.pcap (wallet kept as captured) ----------
XMR_STAK = [
    (C, b'{"method":"login","params":{"login":"4BCeEPhodgPMbPWFN1dPwhWXdRX8q4mhhdZdA1dtSMLTLCEYvAj9QXjXAfF7CugEb'
        b'mfBhgkqHbdgK9b2wKA6nqRZQCgvCDm.cb2b73415c4faf214035a73b9d947c202342f3bf3bdf632132bd6d7af98cb257.ryzen",'
        b'"pass":"x","agent":"xmr-stak-cpu/1.3.0-1.5.0"},"id":1}\n'),
    (S, b'{"id":1,"jsonrpc":"2.0","error":null,"result":{"id":"479059546883218","job":{"blob":"0606e89883d205a65d'
        b'8ee78991838a1cf3ec2ebbc5fb1fa43dec5fa1cd2bee4069212a549cd731000000005a88235653097aa3e97ef2ceef4aee61075'
        b'1a828f9be1a0758a78365fb0a4c8c05","job_id":"722134174127131","target":"dc460300"},"status":"OK"}}\n'),
    (C, b'{"method":"submit","params":{"id":"479059546883218","job_id":"722134174127131","nonce":"98024001",'
        b'"result":"c9be9381a68d533c059d614d961e0534d7d8785dd5c339c2f9596eb95f320100"},"id":1}\n'),
    (S, b'{"id":1,"jsonrpc":"2.0","error":null,"result":{"status":"OK"}}\n'),
    (S, b'{"jsonrpc":"2.0","method":"job","params":{"blob":"06069c9983d2052e885e6d1f99749ae1c263f36cb423bd1b71ea'
        b'fb4c84eeadb83b5dc8e1a84be60000000017a6f964a2409168ca9e88b304d405e6119728483fc40c588a9be058d78beaf904",'
        b'"job_id":"652010620664805","target":"dc460300"}}\n'),
]

# --- XMRig login (jsonrpc 2.0, algo list) and keepalived ----------------------------------------
XMRIG = [
    (C, b'{"id":1,"jsonrpc":"2.0","method":"login","params":{"login":"44AFFq5kSiGBoZ4NMDwYtN18obc8AemS33DBLWs3H7ot'
        b'XN3GCXoNjTQNLHsGNKJUZXKXsKL1zkiDt5LpBrkB3DoB3qXcTo5.rig1","pass":"x","agent":"XMRig/6.21.0 (Linux x86_64)'
        b' libuv/1.44.2 gcc/12.2.0","algo":["cn/1","cn/2","cn/r","rx/0"]}}\n'),
    (C, b'{"id":5,"jsonrpc":"2.0","method":"keepalived","params":{"id":"1be0b7b6b5d14ad0ab8b6dd5fb4a8b4c"}}\n'),
]

# --- CoinHive browser miner (messages of coinhive.min.js) ---------------------------------------
COINHIVE = [
    (C, b'{"type":"auth","params":{"site_key":"QFKCakdSMHFDFLRlHXXPHoMWfIKyzzd9","type":"anonymous","user":null,'
        b'"goal":0}}'),
    (S, b'{"type":"authed","params":{"token":"","hashes":0}}'),
    (S, b'{"type":"job","params":{"job_id":"862428263124286","blob":"0606e89883d205a65d8ee78991838a1cf3ec2ebbc5fb1fa4'
        b'3dec5fa1cd2bee4069212a549cd731000000005a88235653097aa3e97ef2ceef4aee610751a828f9be1a0758a78365fb0a4c8c05",'
        b'"target":"ffffff00"}}'),
    (C, b'{"type":"submit","params":{"job_id":"862428263124286","nonce":"0b000000","result":"a5e7a8e4b2b02cc41787'
        b'0fe2fa5b0c35c5d07e3e7a4ad95f6e64fd9ef5dd0000"}}'),
]

# --- eth-proxy from nDPI mining.pcapng / peafowl ethereum.pcap --------------------------------------
ETHPROXY = [
    (C, b'{"worker": "eth1.0", "jsonrpc": "2.0", "params": ["0x0fccfff9e61a230ff380530c6827caf4759337c6.rig2", "x"],'
        b' "id": 2, "method": "eth_submitLogin"}\n'
        b'{"worker": "", "jsonrpc": "2.0", "params": [], "id": 3, "method": "eth_getWork"}\n'),
    (S, b'{"id":2,"jsonrpc":"2.0","result":true}\n'
        b'{"id":3,"jsonrpc":"2.0","result":["0x22b597d7bf24ef9a605a5d4fb6f7e155b7d0ce28ba6a9aa9eda6b74b34685d71",'
        b'"0x88615dc9f6fe84975a471ca044adecdfde8c8fcdde97d2a3416254d590c52d0c","0x0112e0be826d694b2e62d01511f12a60'
        b'61fbaec8bc02357593e70e52ba","0x492609"]}\n'),
    (C, b'{"id":6,"jsonrpc":"2.0","method":"eth_submitHashrate","params":["0x375198a", "0x0000000000000000000000000'
        b'000000000000000000000000000000016526810"]}\n'
        b'{"id":4,"method":"eth_submitWork","params":["0x07a05fa4133e5126","0x41f3161ce643ebcf25d34dde1ac0d3e695edc'
        b'bf136eed96680bac4cf1a82e417","0x44e9206e9c830706f60e0129bdd117a2718d6553f3405b477541994df3583d4b"]}\n'),
    (S, b'{"id":4,"jsonrpc":"2.0","result":true}\n'),
]

# --- getwork over HTTP (bitcoind/cgminer era) and getblocktemplate (BIP 22/23) ------------------
GETWORK_BODY = b'{"method": "getwork", "params": [], "id": 0}'
GETWORK_HTTP = [
    (C, b"POST / HTTP/1.1\r\nAuthorization: Basic dXNlcjpwYXNz\r\nHost: 10.0.0.5:8332\r\nAccept: */*\r\n"
        b"Content-Type: application/json\r\nContent-Length: %d\r\nUser-Agent: cgminer 2.7.5\r\n"
        b"X-Mining-Extensions: longpoll midstate rollntime submitold\r\nX-Mining-Hashrate: 1250000000\r\n\r\n"
        % len(GETWORK_BODY) + GETWORK_BODY),
    (S, b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nX-Long-Polling: /LP\r\nX-Roll-NTime: expire=120\r\n"
        b"X-Stratum: stratum+tcp://10.0.0.5:3333\r\nContent-Length: 2\r\n\r\n{}"),
]
GBT_BODY = (b'{"id": 0, "method": "getblocktemplate", "params": [{"capabilities": ["coinbasetxn", "workid", '
            b'"coinbase/append"], "rules": ["segwit"]}]}')
GBT_HTTP = [
    (C, b"POST / HTTP/1.1\r\nHost: 10.0.0.5:8332\r\nContent-Type: application/json\r\nContent-Length: %d\r\n\r\n"
        % len(GBT_BODY) + GBT_BODY),
]
ETH_GETWORK_BODY = b'{"jsonrpc":"2.0","method":"eth_getWork","params":[],"id":73}'
ETH_GETWORK_HTTP = [
    (C, b"POST / HTTP/1.1\r\nHost: 10.0.0.7:8545\r\nContent-Type: application/json\r\nContent-Length: %d\r\n\r\n"
        % len(ETH_GETWORK_BODY) + ETH_GETWORK_BODY),
]

# --- Hard negatives -----------------------------------------------------------------------------
# Ethereum node JSON-RPC over HTTP (peafowl ethereum-js-http.pcap) and other node calls.
def http_post(body: bytes, host: bytes = b"localhost:8545") -> bytes:
    return (b"POST / HTTP/1.1\r\nHost: %s\r\nUser-Agent: curl/7.56.1\r\nAccept: */*\r\n"
            b"Content-Type: application/json\r\nContent-Length: %d\r\n\r\n" % (host, len(body)) + body)


def http_ok(body: bytes) -> bytes:
    return b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: %d\r\n\r\n" % len(body) + body


ETH_NODE_RPC = [
    (C, http_post(b'{"id":1,"jsonrpc":"2.0","method":"web3_clientVersion","params":[]}')),
    (S, b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nVary: Origin\r\nDate: Fri, 23 Mar 2018 17:21:07 GMT\r\n"
        b"Content-Length: 75\r\n\r\n"
        b'{"jsonrpc":"2.0","id":1,"result":"Geth/v1.8.2-stable/linux-amd64/go1.9.2"}\n'),
]
ETH_NODE_CALLS = [
    b'{"jsonrpc":"2.0","method":"eth_blockNumber","params":[],"id":1}',
    b'{"jsonrpc":"2.0","method":"eth_getBalance","params":["0x407d73d8a49eeb85d32cf465507dd71d507100c1","latest"],"id":1}',
    b'{"jsonrpc":"2.0","method":"eth_call","params":[{"to":"0x6b175474e89094c44da98b954eedeac495271d0f",'
    b'"data":"0x70a08231000000000000000000000000407d73d8a49eeb85d32cf465507dd71d507100c1"},"latest"],"id":2}',
    b'[{"jsonrpc":"2.0","method":"eth_chainId","params":[],"id":1},{"jsonrpc":"2.0","method":"net_version","params":[],"id":2}]',
]
BITCOIND_RPC = [
    (C, http_post(b'{"jsonrpc": "1.0", "id": "curltest", "method": "getblockcount", "params": []}', b"127.0.0.1:8332")),
    (S, http_ok(b'{"result":840000,"error":null,"id":"curltest"}\n')),
]
# Bitcoin P2P version + verack (peafowl bitcoin.pcap, first bytes).
BITCOIN_P2P = [
    (C, b'\xf9\xbe\xb4\xd9version\x00\x00\x00\x00\x00U\x00\x00\x00\x01}\x00\x00\x01\x00\x00\x00\x00\x00\x00\x00X'
        b'\xb2\x90M\x00\x00\x00\x00\x01\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\xff\xff'
        b'BDS\x16 \x8d\x01\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\xff\xff&`\x84\x1e '
        b'\x8d\xb5\x0e\x07x\x812\xe0\xa6\x00\xe0\xbe\x01\x00\xf9\xbe\xb4\xd9verack\x00\x00\x00\x00\x00\x00\x00\x00'
        b'\x00\x00'),
    (S, b'\xf9\xbe\xb4\xd9version\x00\x00\x00\x00\x00U\x00\x00\x00\x9c|\x00\x00\x01\x00\x00\x00\x00\x00\x00\x00Y'
        b'\xb2\x90M\x00\x00\x00\x00\x01\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\xff\xff'
        b'&`\x84\x1e\xd8W\x01\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\xff\xffBDS\x16 '
        b'\x8d3\xdd\x1b>\x01\xf7\x83w\x00\x07\xc3\x01\x00\xf9\xbe\xb4\xd9verack\x00\x00\x00\x00\x00\x00\x00\x00'
        b'\x00\x00'),
]
# Monero P2P levin handshake (ndpi monero.pcap, first bytes).
MONERO_P2P = [
    (C, b'\x01!\x01\x01\x01\x01\x01\x01\x06\x01\x00\x00\x00\x00\x00\x00\x01\xe9\x03\x00\x00\x00\x00\x00\x00\x01\x00'
        b'\x00\x00\x01\x00\x00\x00\x01\x11\x01\x01\x01\x01\x02\x01\x01\x08\tnode_data\x0c\x10\x07my_port\x06\xa0F'
        b'\x00\x00\nnetwork_id\n@\x120\xf1qa\x04Aa\x171\x00\x82\x16\xa1\xa1\x10\x07peer_id\x05\x11\x96aH;\xc2\xac'),
    (S, b'\x01!\x01\x01\x01\x01\x01\x01lB\x00\x00\x00\x00\x00\x00\x00\xe9\x03\x00\x00\x01\x00\x00\x00\x02\x00\x00\x00'
        b'\x01\x00\x00\x00\x01\x11\x01\x01\x01\x01\x02\x01\x01\x0c\x12local_peerlist_new\x8c\xe9\x03\x08\x03adr'),
]


def _random(n: int, seed: int) -> bytes:
    return random.Random(seed).randbytes(n)


# Ethereum devp2p RLPx: an EIP-8 auth message (2-byte size prefix, then ECIES ciphertext) and ack.
RLPX = [(C, b"\x01\x94" + _random(404, 1)), (S, b"\x01\x82" + _random(386, 2))]
# LSP-style JSON-RPC (Content-Length framing).
LSP_BODY = (b'{"jsonrpc":"2.0","id":1,"method":"initialize","params":{"processId":4242,"rootUri":"file:///src",'
            b'"capabilities":{}}}')
LSP = [(C, b"Content-Length: %d\r\n\r\n" % len(LSP_BODY) + LSP_BODY)]
# A newline-delimited JSON API whose "login" is a web login, not a miner.
JSON_LINES_API = [
    (C, b'{"id":1,"method":"login","params":{"login":"bob","pass":"hunter2"}}\n'
        b'{"id":2,"method":"list","params":{"folder":"inbox"}}\n'),
    (S, b'{"id":1,"result":{"session":"abc"}}\n{"id":2,"result":[]}\n'),
]
# Text that mentions the method names without being the protocol.
MENTIONS = [
    (C, b"GET /docs/stratum HTTP/1.1\r\nHost: docs.example\r\n\r\n"),
    (S, b"HTTP/1.1 200 OK\r\nContent-Length: 120\r\n\r\nThe miner first calls mining.subscribe, then "
        b"mining.authorize; the pool answers with mining.notify and eth_submitLogin is eth-proxy."),
]
JSON_MENTIONS = [
    (C, b'{"note": "call mining.subscribe first", "method": "chat.post"}\n'
        b'{"text": "{\\"method\\":\\"mining.subscribe\\",\\"params\\":[]}"}\n'),
    (S, b'{"ok": true}\n{"ok": true}\n'),
]

MINING = {
    "stratum_btc": STRATUM_BTC, "stratum_zcash": STRATUM_ZCASH, "ethstratum": ETHSTRATUM,
    "configure": CONFIGURE, "xmr_stak": XMR_STAK, "xmrig": XMRIG, "coinhive": COINHIVE,
    "ethproxy": ETHPROXY, "getwork_http": GETWORK_HTTP, "gbt_http": GBT_HTTP, "eth_getwork_http": ETH_GETWORK_HTTP,
}
NEGATIVES = {
    "eth_node_rpc": ETH_NODE_RPC, "bitcoind_rpc": BITCOIND_RPC, "bitcoin_p2p": BITCOIN_P2P,
    "monero_p2p": MONERO_P2P, "rlpx": RLPX, "lsp": LSP, "json_lines_api": JSON_LINES_API,
    "mentions": MENTIONS, "json_mentions": JSON_MENTIONS,
}
for i, body in enumerate(ETH_NODE_CALLS):
    NEGATIVES["eth_node_call_%d" % i] = [(C, http_post(body)), (S, http_ok(b'{"jsonrpc":"2.0","id":1,"result":"0x1"}'))]


def streams(transcript) -> tuple[bytes, bytes]:
    up = b"".join(d for k, d in transcript if k == C)
    down = b"".join(d for k, d in transcript if k == S)
    return up, down
