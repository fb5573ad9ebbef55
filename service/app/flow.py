"""The request flow, the same for every transport and route: check readiness, read the images,
admit, hold the memory decoding will take, decode, estimate under the deadline.

    outcomes = await estimate_request(core, "http", options, read_images)

``read_images(held)`` is the transport's part: it reads what the client sent (a REST body, a
gRPC message) into ``EncodedImages``, holding the bytes in the memory budget as they arrive
(``held.add``). A request takes one of the request slots only once it is read, so that clients
slow to send cannot hold the slots; what they have sent so far is all they hold.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from typing import TypeVar

from service.app.admission import BYTES_PER_DECODED_MEGAPIXEL, Held
from service.app.core import Core
from service.app.images import (
    DecodePlan,
    EncodedImages,
    ImageOutcome,
    check_image_count,
    decode_request_images,
    decoded_megapixels,
    plan_decodes,
)
from service.app.options import RequestOptions
from service.errors import BackendUnavailable, DeadlineExceeded, FaceposeError
from service.metrics import FACES_PER_IMAGE

T = TypeVar("T")


async def within(seconds: float, work: Awaitable[T]) -> T:
    """``work``, or DeadlineExceeded once ``seconds`` have passed."""
    try:
        return await asyncio.wait_for(work, seconds)
    except TimeoutError:
        raise DeadlineExceeded(f"not done within the {seconds:g} s request deadline") from None


async def estimate_request(core: Core, transport: str, options: RequestOptions,
                           read_images: Callable[[Held], Awaitable[EncodedImages]],
                           client_deadline_s: float | None = None) -> list[ImageOutcome]:
    """One outcome per image, in order. Raises Overloaded (no request slot or no memory left),
    RequestTooLarge, TooManyImages, BackendUnavailable, what ``read_images`` raises (a
    transport's own limits while reading), an image's error when
    ``EncodedImages.whole``, and DeadlineExceeded: the server's request deadline runs from when
    the images are read, the client's (seconds from now) from the call."""
    settings = core.settings
    loop = asyncio.get_running_loop()
    client_until = loop.time() + client_deadline_s if client_deadline_s is not None else None
    if not core.backend_ready():
        raise BackendUnavailable("the inference server is not ready")
    with core.memory.hold(transport) as held:
        images = await read_images(held)
        check_image_count(settings, len(images.data))
        with core.gate.hold(transport):
            # The body stays held until the request ends (the pipeline may decode it again).
            held.add(max(0, sum(map(len, images.data)) - held.bytes))
            plans = plan_decodes(settings, images, options)
            held.add(round(BYTES_PER_DECODED_MEGAPIXEL * decoded_megapixels(plans)))
            seconds = settings.request_timeout_s
            if client_until is not None:
                seconds = max(0.0, min(seconds, client_until - loop.time()))
            return await within(seconds, _estimate(core, images, options, plans))


async def _estimate(core: Core, images: EncodedImages, options: RequestOptions,
                    plans: list[DecodePlan | FaceposeError]) -> list[ImageOutcome]:
    outcomes = await asyncio.to_thread(decode_request_images, core.settings, images, options,
                                       True, plans)
    decoded = [outcome for outcome in outcomes if outcome.request is not None]
    results = await core.batcher.submit([outcome.request for outcome in decoded
                                         if outcome.request is not None])
    for outcome, result in zip(decoded, results, strict=True):
        outcome.result = result
        FACES_PER_IMAGE.observe(len(result.faces))
    return outcomes
