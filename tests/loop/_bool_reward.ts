/** A default-exported, async reward function returning booleans (counted as 1/0) for the score tests. */
export default async (_prompt: string, response: string, row: { answer: string }): Promise<boolean> => {
  await Promise.resolve();
  return response.trim() === row.answer;
};
