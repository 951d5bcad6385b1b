"""A carrier integration written only against the generated client (.ci/generated-client):
an administrator sets up a site, a locker, a resident and a carrier; the carrier books a parcel
(pre-advice), reads it, cancels it and reads it again; an unsigned request is refused. Every
request and answer goes through the generated models. Exits non-zero on the first mismatch.

The carrier signs each request as the document's `carrier` security scheme says (Standard
Webhooks over the exact body bytes), in an httpx request hook: the generated client leaves
signing to the transport.
"""

import base64
import hashlib
import hmac
import sys
import time
import uuid

import httpx
from lockerhub_client import AuthenticatedClient
from lockerhub_client.api.carrier import carrier_get_parcel, carrier_post_event
from lockerhub_client.api.carriers import carriers_create
from lockerhub_client.api.lockers import lockers_create
from lockerhub_client.api.recipients import recipients_create
from lockerhub_client.api.sites import sites_create
from lockerhub_client.models import (
    CancelEvent,
    Cancelled,
    CarrierParcel,
    CreateCarrier,
    CreateLocker,
    CreateRecipient,
    CreateSite,
    ErrorBody,
    LayoutRow,
    OutForDelivery,
    OutForDeliveryEvent,
    ParcelRef,
    PreAdviceOutcome,
    RecipientRef,
)

BASE, ADMIN_KEY = sys.argv[1], sys.argv[2]


def check(cond, what, got=None):
    if not cond:
        print(f"FAILED: {what}: {got!r}", file=sys.stderr)
        sys.exit(1)
    print(f"ok: {what}")


def signer(secret: str):
    key = base64.b64decode(secret.removeprefix("whsec_"))

    def sign(request: httpx.Request) -> None:
        msg_id, ts = f"client-{uuid.uuid4()}", str(int(time.time()))
        body = request.content or b""
        mac = hmac.new(key, f"{msg_id}.{ts}.".encode() + body, hashlib.sha256).digest()
        request.headers["webhook-id"] = msg_id
        request.headers["webhook-timestamp"] = ts
        request.headers["webhook-signature"] = "v1," + base64.b64encode(mac).decode()

    return sign


# Generous timeouts: CI runs this on a loaded 2-core machine.
TIMEOUT = httpx.Timeout(30.0)
admin = AuthenticatedClient(base_url=BASE, token=ADMIN_KEY, timeout=TIMEOUT)
site = sites_create.sync(client=admin, body=CreateSite(name="Harbour View", address="1 Quay St", time_zone="UTC"))
check(site is not None and not isinstance(site, ErrorBody), "site created", site)
locker = lockers_create.sync(
    client=admin,
    body=CreateLocker(name="Lobby", site_id=site.id, layout=[LayoutRow(size="S", count=2)]),
)
check(not isinstance(locker, ErrorBody), "locker created", locker)
locker_id = locker.locker.id
resident = recipients_create.sync(
    client=admin, body=CreateRecipient(name="Ann Lee", site_id=site.id, phone="+1 555 010 2030")
)
check(not isinstance(resident, ErrorBody), "resident created", resident)
created = carriers_create.sync(client=admin, body=CreateCarrier(code="acme", name="Acme Parcel"))
check(not isinstance(created, ErrorBody), "carrier created", created)

carrier = AuthenticatedClient(
    base_url=BASE,
    token=created.secrets.api_key,
    timeout=TIMEOUT,
    httpx_args={"event_hooks": {"request": [signer(created.secrets.webhook_secret)]}},
)
tracking = "ACME" + uuid.uuid4().hex[:12].upper()
booked = carrier_post_event.sync(
    client=carrier,
    body=OutForDeliveryEvent(
        type_="out_for_delivery",
        data=OutForDelivery(
            tracking_number=tracking, locker_id=locker_id, recipient=RecipientRef(phone="+15550102030"), size="S"
        ),
    ),
)
check(isinstance(booked, PreAdviceOutcome), "booking answered with a PreAdviceOutcome", booked)
check(booked.state == "reserved" and booked.compartment in (1, 2), "a compartment is reserved", booked)

read = carrier_get_parcel.sync(client=carrier, tracking_number=tracking)
check(isinstance(read, CarrierParcel), "the parcel reads as a CarrierParcel", read)
check(read.parcel.state == "reserved" and read.parcel.tracking_number == tracking, "it is reserved", read.parcel)
check([e.kind for e in read.events] == ["pre_advised", "reserved"], "its history", [e.kind for e in read.events])

cancelled = carrier_post_event.sync(
    client=carrier, body=CancelEvent(type_="cancel", data=ParcelRef(tracking_number=tracking, reason="test"))
)
check(isinstance(cancelled, Cancelled), "cancelling answers Cancelled", cancelled)
check(cancelled.released_compartment == booked.compartment, "its compartment is released", cancelled)
read = carrier_get_parcel.sync(client=carrier, tracking_number=tracking)
check(read.parcel.state == "cancelled", "it reads as cancelled", read.parcel.state)

unsigned = AuthenticatedClient(base_url=BASE, token=created.secrets.api_key, timeout=TIMEOUT)
refused = carrier_get_parcel.sync_detailed(client=unsigned, tracking_number=tracking)
check(refused.status_code == 401 and isinstance(refused.parsed, ErrorBody), "an unsigned request is 401", refused)
print("generated client: booked, read, cancelled and read a parcel")
