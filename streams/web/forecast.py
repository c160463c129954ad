"""``GET /api/forecast``: the staffing plan of ``cci forecast`` on the worker's web server.

Apart from the dashboard's routes because it reads the worker's store (the dashboard reads only
the topics it follows).
"""

from __future__ import annotations

import asyncio
from typing import Any
from urllib.parse import quote

from aiohttp import web

from streams.clock import clock_for
from streams.forecast.output import json_text
from streams.forecast.parameters import PARAMETERS, ParameterError, parse_request
from streams.settings import Settings
from streams.store import query
from streams.store.clickhouse import Store, StoreBusy, StoreError
from streams.web.dashboard.view import BadParameter, read_params
from streams.web.dashboard.web import json_response, query_of

API_FORECAST_PATH = "/api/forecast"
# Where the plan's CCI comes from (what `cci forecast` prints above its table), percent-encoded
# UTF-8: segment names are data, and a header must not carry what they may hold.
FORECAST_SOURCE_HEADER = "X-CCI-Forecast-Source"


async def forecast_answer(
    request: web.Request, settings: Settings, store: Store | None
) -> web.Response:
    """``GET /api/forecast``: what ``cci forecast --format json`` prints for the same parameters
    (docs/forecast.md), byte for byte; without ``cci``, from this worker's own store. 400 names a
    bad parameter, 404 says which figure the store lacks, 429 while FORECAST_QUERY_SLOTS forecasts
    read the store, 503 while the store is not open."""
    try:
        params = read_params(query_of(request), PARAMETERS)
        plan_request = parse_request(params)
    except BadParameter as exc:
        return json_response(exc.body(), status=400)
    except ParameterError as exc:
        body = {"error": f"{exc.parameter}: {exc}", "parameter": exc.parameter}
        return json_response(body, status=400)
    if plan_request.cci is None and store is None:
        return json_response(
            {"error": "the worker's store is not open (starting or stopping)"}, status=503
        )

    def run(sql: str, parameters: Any) -> query.QueryResult:
        assert store is not None
        # Slots of its own: ad hoc queries (POST /api/query) cannot starve forecasts nor
        # forecasts them.
        return query.portable(store.query(sql, parameters, budget="forecast"))

    try:
        plans, source = await asyncio.to_thread(
            query.forecast_plan, settings, plan_request, clock_for(settings).now(), run
        )
    except query.NoFigure as exc:
        return json_response({"error": str(exc)}, status=404)
    except StoreBusy as exc:
        busy = json_response({"error": f"the store is busy with forecasts: {exc}"}, status=429)
        busy.headers["Retry-After"] = "1"
        return busy
    except StoreError as exc:
        return json_response({"error": f"the store could not answer: {exc}"}, status=503)
    return web.Response(
        body=json_text(plans).encode(),
        content_type="application/json",
        charset="utf-8",
        headers={FORECAST_SOURCE_HEADER: quote(source, safe=" |:/()+,.-")},
    )
