"""[web] config: password hashing, listen/TLS validation, the `check` warnings, the CLI."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
from pydantic import ValidationError

from gateway.web.config import WebConfig, check_warnings, hash_password, split_listen, verify_password


def test_hash_verifies_only_the_same_password() -> None:
    h = hash_password("s3cret-pass", log2_n=10)
    assert h.startswith("scrypt$10$8$1$")
    assert verify_password("s3cret-pass", h)
    assert not verify_password("s3cret-pasS", h)
    assert not verify_password("", h)
    assert hash_password("s3cret-pass", log2_n=10) != h, "a fresh salt each time"


@pytest.mark.parametrize("bad", ["", "plain", "scrypt$10$8$1$c2FsdA==", "scrypt$99$8$1$c2FsdHNhbHQ=$aGFzaGhhc2hoYXNoaGFzaA==",
                                 "bcrypt$10$8$1$c2FsdHNhbHQ=$aGFzaGhhc2hoYXNoaGFzaA==", "scrypt$10$8$1$!!!$???"])
def test_malformed_hashes_are_refused(bad: str) -> None:
    assert not verify_password("x", bad)
    with pytest.raises(ValidationError, match="password_hash"):
        WebConfig(password_hash=bad)


def test_password_never_appears_in_the_error() -> None:
    with pytest.raises(ValidationError) as exc:
        WebConfig(password_hash="hunter2hunter2")
    assert "hash-password" in str(exc.value)


@pytest.mark.parametrize(("listen", "expected"), [("0.0.0.0:8080", ("0.0.0.0", 8080)), ("[::1]:80", ("::1", 80)),
                                                  ("localhost:0", ("localhost", 0))])
def test_listen(listen: str, expected: tuple[str, int]) -> None:
    assert split_listen(listen) == expected
    assert (WebConfig(listen=listen).host, WebConfig(listen=listen).port) == expected


@pytest.mark.parametrize("listen", ["8080", ":8080", "host:", "host:99999", "host:http"])
def test_bad_listen(listen: str) -> None:
    with pytest.raises(ValidationError, match="listen"):
        WebConfig(listen=listen)


def test_tls_needs_both_files(tmp_path: Path) -> None:
    with pytest.raises(ValidationError, match="tls_cert and tls_key go together"):
        WebConfig(tls_cert=tmp_path / "c.pem")
    WebConfig(tls_cert=tmp_path / "c.pem", tls_key=tmp_path / "k.pem")


def test_unknown_keys_and_zones_are_refused() -> None:
    with pytest.raises(ValidationError):
        WebConfig.model_validate({"listen": "127.0.0.1:1", "pasword_hash": "x"})
    with pytest.raises(ValidationError, match="IANA"):
        WebConfig(timezone="Mars/Olympus")


def test_check_warnings() -> None:
    h = hash_password("long enough", log2_n=10)
    exposed = check_warnings(WebConfig(listen="0.0.0.0:8080"))
    assert len(exposed) == 1 and "no password" in exposed[0]
    assert check_warnings(WebConfig(listen="127.0.0.1:8080")) == []
    assert check_warnings(WebConfig(listen="[::1]:8080")) == []
    clear = check_warnings(WebConfig(listen="192.168.1.5:8080", password_hash=h))
    assert len(clear) == 1 and "clear text" in clear[0]
    assert check_warnings(WebConfig(listen="0.0.0.0:8443", password_hash=h, tls_cert=Path("c"),
                                    tls_key=Path("k"))) == []


def test_cli_hash_password_from_stdin() -> None:
    out = subprocess.run([sys.executable, "-m", "gateway", "web", "hash-password"], input="a good password\n",
                         capture_output=True, text=True, timeout=60, check=True)
    line = out.stdout.strip()
    assert verify_password("a good password", line)
    assert "a good password" not in out.stderr + out.stdout.replace(line, "")
    WebConfig(password_hash=line)


def test_cli_refuses_a_short_password() -> None:
    out = subprocess.run([sys.executable, "-m", "gateway", "web", "hash-password"], input="short\n",
                         capture_output=True, text=True, timeout=60)
    assert out.returncode == 2 and out.stdout == "" and "at least" in out.stderr


def test_check_warns_about_an_exposed_page_without_password(tmp_path: Path) -> None:
    cfg = tmp_path / "gateway.toml"
    cfg.write_text(f'[gateway]\ndata_dir = "{tmp_path}"\n\n[web]\nlisten = "0.0.0.0:8080"\n')
    out = subprocess.run([sys.executable, "-m", "gateway", "check", "--config", str(cfg)],
                         capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    assert "warning: web.listen = '0.0.0.0:8080' exposes the page" in out.stderr
    cfg.write_text(f'[gateway]\ndata_dir = "{tmp_path}"\n\n[web]\nlisten = "127.0.0.1:8080"\n')
    out = subprocess.run([sys.executable, "-m", "gateway", "check", "--config", str(cfg)],
                         capture_output=True, text=True, timeout=60)
    assert out.returncode == 0 and "web" not in out.stderr


def test_check_reports_a_bad_web_section(tmp_path: Path) -> None:
    cfg = tmp_path / "gateway.toml"
    cfg.write_text('[web]\nlisten = "8080"\npassword_hash = "secret"\n')
    out = subprocess.run([sys.executable, "-m", "gateway", "check", "--config", str(cfg)],
                         capture_output=True, text=True, timeout=60)
    assert out.returncode == 2
    assert "web.listen" in out.stderr and "web.password_hash" in out.stderr
    assert "'secret'" not in out.stderr, "a would-be password is not echoed"
