// A small client of the ctxbudget decision service (`ctxbudget serve`), plain HTTP with
// the fetch built into Node 18+ and browsers; no dependencies.
//
//   import { CtxBudget } from "./ctxbudget.js";
//   const cb = new CtxBudget("http://127.0.0.1:8181", process.env.CTXBUDGET_TOKEN);
//   const d = await cb.decide("support-assistant", [{ source_id: "kb#1", content: "...", relevance_score: 0.9 }]);
//   console.log(d.decision_id, d.context);
//
// ctxbudget.js next to this file is its `tsc` output (npx -p typescript tsc -p .).

export interface Candidate {
  source_id: string;
  content: string;
  relevance_score: number;
  token_count?: number;
  level?: string;
  parent_id?: string | null;
  metadata?: Record<string, unknown>;
}

export interface DecideOptions {
  request_id?: string;
  requested_by?: string;
  labels?: Record<string, string>;
  query?: string;
}

export interface Item {
  source_id: string;
  tokens: number;
  reason: string;
  evidence?: unknown;
  rule?: string | null;
}

export interface Decision {
  decision_id: string;
  product: string;
  policy: { name: string; revision: string; digest: string };
  context: string;
  context_tokens: number;
  limit_tokens: number;
  included: Item[];
  excluded: Item[];
  solver: { status: string; objective: number | null; best_bound: number | null; gap: number | null };
  strategy: { requested: string; used: string; fallback_reason: string | null };
  unmet: unknown[];
  warnings: unknown[];
}

/** An error answer of the service: the engine's error code, JSON path and message. */
export class CtxBudgetError extends Error {
  readonly status: number;
  readonly code: string;
  readonly path: string;
  readonly body: Record<string, unknown>;

  constructor(status: number, body: Record<string, unknown>) {
    super(`${String(body.code ?? "http." + status)}: ${String(body.path ?? "$")}: ${String(body.message ?? "")}`);
    this.name = "CtxBudgetError";
    this.status = status;
    this.code = String(body.code ?? `http.${status}`);
    this.path = String(body.path ?? "$");
    this.body = body;
  }
}

export class CtxBudget {
  private readonly base: string;
  private readonly token: string | undefined;

  constructor(base: string, token?: string) {
    this.base = base.replace(/\/+$/, "");
    this.token = token;
  }

  /** Which candidates go into the context under the product's policy. The answer comes
   *  only once the decision's audit record is on disk; 409 means infeasible. */
  async decide(product: string, candidates: Candidate[], options: DecideOptions = {}): Promise<Decision> {
    return (await this.call("POST", `/v1/decide/${encodeURIComponent(product)}`,
      { candidates, ...options })) as Decision;
  }

  async policies(): Promise<unknown> {
    return this.call("GET", "/v1/policies");
  }

  async health(): Promise<{ status: string; products: number; problems: string[] }> {
    return (await this.call("GET", "/health", undefined, true)) as
      { status: string; products: number; problems: string[] };
  }

  private async call(method: string, path: string, body?: unknown, anyStatus = false): Promise<unknown> {
    const headers: Record<string, string> = { accept: "application/json" };
    if (body !== undefined) headers["content-type"] = "application/json";
    if (this.token) headers.authorization = `Bearer ${this.token}`;
    const r = await fetch(this.base + path, {
      method, headers, body: body === undefined ? undefined : JSON.stringify(body),
    });
    const data = (await r.json()) as Record<string, unknown>;
    if (!r.ok && !anyStatus) throw new CtxBudgetError(r.status, data);
    return data;
  }
}
