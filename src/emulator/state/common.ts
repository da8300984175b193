/** Small rules every resource of the emulator shares. */
import { randomBytes } from "node:crypto";
import { validateLabels } from "../../hcloud/labels.js";
import type { Labels } from "../../hcloud/schema.js";
import { invalidInput, type FieldProblem } from "./errors.js";

export function labelProblems(labels: Labels): FieldProblem[] {
  const problems = validateLabels(labels);
  if (problems.length === 0) return [];
  return [{ name: "labels", messages: problems.map((p) => `${p.part} '${p.key}': ${p.message}`) }];
}

/** Throws invalid_input when labels break the label rules. */
export function checkLabels(labels: Labels): void {
  const problems = labelProblems(labels);
  if (problems.length > 0) throw invalidInput(problems);
}

export function randomPassword(): string {
  const alphabet = "ABCDEFGHJKLMNPQRSTUVWXYZabcdefghijkmnopqrstuvwxyz23456789";
  return Array.from(randomBytes(20), (b) => alphabet[b % alphabet.length]).join("");
}
