// node example.mjs BASE_URL PRODUCT [OTHER_PRODUCT]   (token: $CTXBUDGET_TOKEN)
// Decides once for PRODUCT and prints {decision_id, included, policy}; with OTHER_PRODUCT,
// also shows that the token is refused there (403, auth.forbidden).
import { CtxBudget, CtxBudgetError } from "./ctxbudget.js";

const [base, product, other] = process.argv.slice(2);
const cb = new CtxBudget(base, process.env.CTXBUDGET_TOKEN);
const candidates = [
  { source_id: "kb#refunds", content: "Refunds are accepted within 30 days of delivery.", relevance_score: 0.92 },
  { source_id: "kb#shipping", content: "Shipping takes five to seven working days.", relevance_score: 0.41 },
];
const d = await cb.decide(product, candidates, { request_id: "ts-example-1", requested_by: "ts-client" });
const out = { decision_id: d.decision_id, included: d.included.map((i) => i.source_id), policy: d.policy };
if (other) {
  try {
    await cb.decide(other, candidates);
    out.other = "allowed";
  } catch (e) {
    if (!(e instanceof CtxBudgetError)) throw e;
    out.other = { status: e.status, code: e.code };
  }
}
console.log(JSON.stringify(out));
