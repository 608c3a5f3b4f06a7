/** A reward function for the evaluation tests: longer responses score higher (up to 10 words). */
export default function reward(_prompt: string, response: string): number {
  return Math.min(10, response.trim().split(/\s+/).filter(Boolean).length) / 10;
}
