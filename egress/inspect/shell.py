"""Reverse shells: a plaintext interactive shell over a connection the sandbox opened.

Guarantees (egress.inspect.base contract): pure, never raises, port independent,
reads at most `max_bytes` per direction.

In a reverse shell the sandbox (the TCP client, the side that opened the
connection) runs the shell and the outside host (the TCP server) types commands.
So the roles are the opposite of every ordinary protocol, and that is what this
detector looks for ("reverse_shell" / "shell.reverse"):

- strong markers sent by the initiator, any one of which suffices: the messages an
  interactive shell prints when it has no terminal ("sh: no job control in this
  shell", "bash: cannot set terminal process group", "bash: no job control in this
  shell", dash's "sh: 0: can't access tty; job control turned off"), the cmd.exe /
  PowerShell start banner, or `id` output
  ("uid=0(root) gid=0(root)");
- or, weaker, both halves of a conversation: the accepting side sends short
  shell-command lines (id, whoami, uname -a, ls, pwd, cat /etc/passwd, python -c
  'import pty...') and the initiator answers with a shell prompt ("$ ", "# ",
  "bash-5.1$ ", "user@host:~$ ", "PS C:\\>") or with command output such as
  "Linux host 6.1.0 ... GNU/Linux".

The weaker form needs two commands or one command plus a prompt or output, so a
protocol where the server greets first (SMTP, FTP, SSH, MySQL) never matches: their
greetings are not shell commands. Without a SYN (initiator unknown) confidence is 0.6.
"""
from __future__ import annotations

import re

from egress.inspect.base import NEED_MORE, NO_MATCH, InspectResult, Status, StreamView
from egress.types import Detection

MAX_BYTES = 4096

_STRONG = re.compile(
    rb"(?:sh|bash|zsh|ash|dash|ksh)(?:-[\d.]+)?: (?:no job control in this shell"
    rb"|cannot set terminal process group"
    rb"|initialize_job_control: no job control)"
    rb"|sh: \d+: can't access tty; job control turned off"
    rb"|Microsoft Windows \[Version \d+\.\d+[.\d]*\]\r?\n\(c\) (?:\d{4} )?Microsoft Corporation"
    rb"|Windows PowerShell\r?\nCopyright \(C\) (?:\d{4} )?Microsoft Corporation"
    rb"|uid=\d+\([\w.-]+\) gid=\d+\([\w.-]+\)")

_COMMAND = re.compile(
    rb"(?:id|whoami|pwd|ls(?: -[a-zA-Z]+)*(?: [/\w.~-]+)?|uname(?: -[a-z]+)?|hostname|ifconfig|ip a(?:ddr)?"
    rb"|ps(?: -?aux| -ef)?|w|who|env|history|cat /etc/(?:passwd|shadow|issue|os-release|hosts)"
    rb"|cd [/\w.~-]+|netstat(?: -[a-z]+)?|ss -[a-z]+|sudo -l|dir|ver|ipconfig(?: /all)?|systeminfo"
    rb"|echo [\w$ -]+|export (?:TERM|HISTFILE|SHELL)=\S*|stty raw -echo.*|reset"
    rb"|python[23]? -c ['\"]import pty.*|script -qc /bin/(?:ba)?sh /dev/null"
    rb"|/bin/(?:ba)?sh -i|(?:curl|wget) \S+|chmod \+x \S+|exit)\r?\n")

_PROMPT = re.compile(
    rb"(?:^|\n)(?:(?:ba|z|k|da)?sh-[\d.]+[$#]"
    rb"|[\w.-]+@[\w.-]+:[~/][^\n]{0,200}[$#]"
    rb"|\[[\w.-]+@[\w.-]+ [^\]\n]{1,100}\][$#]"
    rb"|PS [A-Z]:\\[^\n>]{0,200}>"
    rb"|[A-Z]:\\[^\n>]{0,200}>"
    rb"|[$#]) ?\Z")

_NOT_SHELL = (b"GET ", b"POST ", b"HEAD ", b"PUT ", b"CONNECT ", b"OPTIONS ", b"SSH-", b"\x16\x03")

_OUTPUT = re.compile(
    rb"Linux [\w.-]+ \d+\.\d+\.\d+\S* #\d+.*GNU/Linux"
    rb"|root:x:0:0:root:/root:"
    rb"|total \d+\r?\n[d-][rwx-]{9}"
    rb"|Darwin Kernel Version \d+")


def _commands(data: bytes) -> int:
    """Shell-command lines in `data`, 0 unless the first non-blank line is one.

    An attacker's first input is a command; a protocol that merely carries text with
    such lines (an HTTP response with a shell script body, a mail) starts otherwise.
    """
    count = 0
    first = True
    for line in data.split(b"\n")[:64]:
        if not line.strip():
            continue
        is_cmd = bool(_COMMAND.fullmatch(line.strip(b" \t\r") + b"\n"))
        if first and not is_cmd:
            return 0
        first = False
        count += is_cmd
    return count


def _prompt(data: bytes) -> bool:
    # a prompt ends a chunk; look at the end of each initiator chunk we can delimit
    for chunk in re.split(rb"\r?\n(?=\r?\n)", data[-4096:]):
        if _PROMPT.search(chunk[-256:]):
            return True
    return bool(_PROMPT.search(data[-256:]))


class ReverseShellDetector:
    name = "reverse_shell"
    protocols = frozenset({6})
    max_bytes = MAX_BYTES

    def inspect(self, view: StreamView) -> InspectResult:
        out, inp = view.to_server[:MAX_BYTES], view.to_client[:MAX_BYTES]
        if not out and not inp:
            return NEED_MORE
        if out.startswith(_NOT_SHELL) or inp.startswith(b"HTTP/") or _binary(out) or _binary(inp):
            return NO_MATCH          # a shell session is text, and not an HTTP or SSH exchange
        conf = 1.0 if view.initiator_known else 0.6
        m = _STRONG.search(out)
        if m:
            return self._match("initiator_marker", m.group(0)[:80], conf)
        commands = _commands(inp)
        if commands:
            prompt = _prompt(out)
            output = _OUTPUT.search(out)
            if output or (prompt and commands >= 1) or commands >= 2 and out:
                ev = output.group(0)[:80] if output else b"prompt" if prompt else b"commands"
                return self._match("acceptor_commands", ev, conf * (0.9 if output or prompt else 0.7),
                                   commands)
        done = (len(out) >= MAX_BYTES or view.closed_to_server) and \
            (len(inp) >= MAX_BYTES or view.closed_to_client)
        # a non-shell protocol shows itself in the first bytes; give up after 1 KiB each way
        if done or (len(out) >= 1024 and len(inp) >= 1024):
            return NO_MATCH
        return NEED_MORE

    @staticmethod
    def _match(rule: str, evidence: bytes, conf: float, commands: int = 0) -> InspectResult:
        ev = {"rule": rule, "evidence": evidence.decode("ascii", "replace")}
        if commands:
            ev["commands"] = commands
        return InspectResult(Status.MATCH, (Detection("reverse_shell", "shell.reverse", ev, conf),), "shell")


def _binary(data: bytes) -> bool:
    """More than 10% bytes outside text (TAB, CR, LF, ESC, printable, UTF-8 high bytes)."""
    if not data:
        return False
    sample = data[:512]
    bad = len(sample.translate(None, _TEXT))
    return bad * 10 > len(sample)


_TEXT = bytes((7, 8, 9, 10, 13, 27)) + bytes(range(0x20, 0x100))
