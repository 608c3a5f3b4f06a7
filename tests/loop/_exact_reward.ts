/**
 * A reward function for the score tests: a verifiable task, exact answers. 1 when the response, trimmed,
 * is the row's `answer`; 0.5 when it contains it; else 0. A response "boom" throws and "nan" returns NaN,
 * so the tests see how failures are reported.
 */
export function reward(prompt: string, response: string, row: Record<string, unknown>): number {
  if (response === "boom") throw new Error("cannot parse the answer");
  if (response === "nan") return NaN;
  if (!prompt) throw new Error("no prompt text");
  const answer = String(row.answer);
  return response.trim() === answer ? 1 : response.includes(answer) ? 0.5 : 0;
}
