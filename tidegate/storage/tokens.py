"""Storage of the webserver's API tokens. Mixed into :class:`tidegate.storage.api.Storage`.

A token is ``tg_<id>_<secret>``: the id names its row, the secret is 256 random bits. Only the
SHA-256 digest of the whole token is stored; :meth:`TokenStorage.create_token` returns the token
once and nothing can show it again."""

from __future__ import annotations

import hashlib
import re
import secrets
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import TYPE_CHECKING

from sqlalchemy import select, update
from sqlalchemy.exc import IntegrityError

from tidegate.definitions.limits import check_name
from tidegate.errors import NotFoundError, TokenError
from tidegate.names import Role
from tidegate.storage.engine import database_now
from tidegate.storage.records import from_row
from tidegate.storage.schema import api_tokens

if TYPE_CHECKING:
    from sqlalchemy import Engine

TOKEN_PREFIX = "tg_"
_TOKEN = re.compile(r"^tg_([0-9a-f]{16})_[A-Za-z0-9_-]{43}$")
_DURATION = re.compile(r"^(\d+)([smhdw])$")
_UNIT_SECONDS = {"s": 1, "m": 60, "h": 3600, "d": 86400, "w": 7 * 86400}


@dataclass(frozen=True)
class TokenRecord:
    """An API token as stored (never the token itself)."""

    token_id: str
    name: str
    role: str
    created_at: datetime
    expires_at: datetime | None
    revoked_at: datetime | None
    last_used_at: datetime | None

    def active(self, now: datetime) -> bool:
        return self.revoked_at is None and (self.expires_at is None or self.expires_at > now)


@dataclass(frozen=True)
class CreatedToken:
    record: TokenRecord
    token: str  # shown once


def token_digest(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


def parse_expiry(text: str) -> timedelta:
    """``30d``, ``12h``, ``90m``, ``2w`` or ``45s`` as a duration; TokenError otherwise."""
    match = _DURATION.match(text.strip())
    if not match or int(match.group(1)) == 0:
        raise TokenError(f"expiry {text!r}: expected a positive duration such as 30d, 12h, 90m or 2w")
    return timedelta(seconds=int(match.group(1)) * _UNIT_SECONDS[match.group(2)])


def parse_role(text: str) -> Role:
    try:
        return Role(text)
    except ValueError:
        raise TokenError(f"role {text!r}: expected one of {', '.join(r.value for r in Role)}") from None


class TokenStorage:
    if TYPE_CHECKING:  # provided by Storage, which mixes this class in
        engine: Engine

    def create_token(self, name: str, role: Role | str, *, expires_in: timedelta | None = None) -> CreatedToken:
        """Insert one token row (one transaction); TokenError if ``name`` is taken."""
        check_name(f"token '{name}'", "name", name)
        role = parse_role(str(role))
        token_id = secrets.token_hex(8)
        token = f"{TOKEN_PREFIX}{token_id}_{secrets.token_urlsafe(32)}"
        try:
            with self.engine.begin() as conn:
                now = database_now(conn)
                conn.execute(
                    api_tokens.insert().values(
                        token_id=token_id,
                        name=name,
                        role=role.value,
                        token_hash=token_digest(token),
                        created_at=now,
                        expires_at=now + expires_in if expires_in is not None else None,
                    )
                )
        except IntegrityError:
            raise TokenError(f"token '{name}': a token with this name exists (revoke it or pick another)") from None
        return CreatedToken(self.get_token(name), token)

    def get_token(self, name: str) -> TokenRecord:
        with self.engine.connect() as conn:
            row = conn.execute(select(api_tokens).where(api_tokens.c.name == name)).first()
        if row is None:
            raise NotFoundError(f"token '{name}': not found")
        return from_row(TokenRecord, row)

    def list_tokens(self) -> list[TokenRecord]:
        with self.engine.connect() as conn:
            rows = conn.execute(select(api_tokens).order_by(api_tokens.c.created_at, api_tokens.c.name)).all()
        return [from_row(TokenRecord, r) for r in rows]

    def active_token_count(self) -> int:
        with self.engine.connect() as conn:
            now = database_now(conn)
            rows = conn.execute(select(api_tokens.c.expires_at).where(api_tokens.c.revoked_at.is_(None))).all()
        return sum(1 for (expires,) in rows if expires is None or _aware(expires) > now)

    def revoke_token(self, name: str) -> bool:
        """Mark the token revoked (one statement); False if it was revoked already."""
        self.get_token(name)
        with self.engine.begin() as conn:
            now = database_now(conn)
            done = conn.execute(
                update(api_tokens)
                .where(api_tokens.c.name == name, api_tokens.c.revoked_at.is_(None))
                .values(revoked_at=now)
            )
        return done.rowcount == 1

    def verify_token(self, token: str) -> TokenRecord | None:
        """The active token whose digest matches ``token`` (and note when it was used); None
        for a malformed, unknown, revoked or expired token."""
        if not _TOKEN.match(token):
            return None
        with self.engine.connect() as conn:
            row = conn.execute(select(api_tokens).where(api_tokens.c.token_hash == token_digest(token))).first()
            now = database_now(conn)
        if row is None:
            return None
        record = from_row(TokenRecord, row)
        if not record.active(now):
            return None
        last = record.last_used_at
        if last is None or now - last > timedelta(minutes=1):  # at most one write a minute per token
            with self.engine.begin() as conn:
                conn.execute(
                    update(api_tokens).where(api_tokens.c.token_id == record.token_id).values(last_used_at=now)
                )
        return record


def _aware(value: datetime) -> datetime:
    from datetime import UTC

    return value if value.tzinfo is not None else value.replace(tzinfo=UTC)
