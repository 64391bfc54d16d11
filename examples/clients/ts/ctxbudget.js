// A small client of the ctxbudget decision service (`ctxbudget serve`), plain HTTP with
// the fetch built into Node 18+ and browsers; no dependencies.
//
//   import { CtxBudget } from "./ctxbudget.js";
//   const cb = new CtxBudget("http://127.0.0.1:8181", process.env.CTXBUDGET_TOKEN);
//   const d = await cb.decide("support-assistant", [{ source_id: "kb#1", content: "...", relevance_score: 0.9 }]);
//   console.log(d.decision_id, d.context);
//
// ctxbudget.js next to this file is its `tsc` output (npx -p typescript tsc -p .).
/** An error answer of the service: the engine's error code, JSON path and message. */
export class CtxBudgetError extends Error {
    status;
    code;
    path;
    body;
    constructor(status, body) {
        super(`${String(body.code ?? "http." + status)}: ${String(body.path ?? "$")}: ${String(body.message ?? "")}`);
        this.name = "CtxBudgetError";
        this.status = status;
        this.code = String(body.code ?? `http.${status}`);
        this.path = String(body.path ?? "$");
        this.body = body;
    }
}
export class CtxBudget {
    base;
    token;
    constructor(base, token) {
        this.base = base.replace(/\/+$/, "");
        this.token = token;
    }
    /** Which candidates go into the context under the product's policy. The answer comes
     *  only once the decision's audit record is on disk; 409 means infeasible. */
    async decide(product, candidates, options = {}) {
        return (await this.call("POST", `/v1/decide/${encodeURIComponent(product)}`, { candidates, ...options }));
    }
    async policies() {
        return this.call("GET", "/v1/policies");
    }
    async health() {
        return (await this.call("GET", "/health", undefined, true));
    }
    async call(method, path, body, anyStatus = false) {
        const headers = { accept: "application/json" };
        if (body !== undefined)
            headers["content-type"] = "application/json";
        if (this.token)
            headers.authorization = `Bearer ${this.token}`;
        const r = await fetch(this.base + path, {
            method, headers, body: body === undefined ? undefined : JSON.stringify(body),
        });
        const data = (await r.json());
        if (!r.ok && !anyStatus)
            throw new CtxBudgetError(r.status, data);
        return data;
    }
}
