// @ts-check
/**
 * The chat page's built-in example tools: the model may call them, the page runs them and sends the
 * results back, until the model answers in words (see `continueToolLoop` in app.js).
 *
 * - `calculator`: arithmetic on numbers with + - * / and parentheses (parsed here, never eval'd);
 * - `get_time`: the current time, in a named IANA time zone or UTC.
 */

/** What the page offers the model, in ssegate's request model (`tools`). */
export const PAGE_TOOLS = [
  {
    name: "calculator",
    description: "Evaluate an arithmetic expression (numbers, + - * /, parentheses) and return its value",
    input_schema: {
      type: "object",
      properties: { expression: { type: "string", description: "e.g. 6 * (3 + 4)" } },
      required: ["expression"],
    },
  },
  {
    name: "get_time",
    description: "The current date and time (clock) in a time zone",
    input_schema: {
      type: "object",
      properties: { zone: { type: "string", description: "an IANA time zone, e.g. Europe/Paris; UTC if unsure" } },
      required: ["zone"],
    },
  },
];

const NAMES = new Set(PAGE_TOOLS.map((tool) => tool.name));

/** @param {string} name */
export function isPageTool(name) {
  return NAMES.has(name);
}

/**
 * Run a page tool; what it returned, or why it failed.
 * @param {string} name
 * @param {any} input
 * @returns {{content: string, isError: boolean}}
 */
export function runPageTool(name, input) {
  try {
    if (name === "calculator") return { content: String(calculate(String(input?.expression ?? ""))), isError: false };
    if (name === "get_time") return { content: timeIn(String(input?.zone ?? "UTC")), isError: false };
    return { content: `no tool called ${name}`, isError: true };
  } catch (error) {
    return { content: error instanceof Error ? error.message : String(error), isError: true };
  }
}

/** @param {string} zone */
function timeIn(zone) {
  const options = /** @type {Intl.DateTimeFormatOptions} */ ({ dateStyle: "full", timeStyle: "long" });
  try {
    return new Intl.DateTimeFormat("en-GB", { ...options, timeZone: zone }).format(new Date());
  } catch {
    return `${new Intl.DateTimeFormat("en-GB", { ...options, timeZone: "UTC" }).format(new Date())} (unknown zone ${zone}; UTC shown)`;
  }
}

/**
 * A small recursive-descent parser: expression := term (('+'|'-') term)*, term := factor (('*'|'/') factor)*,
 * factor := number | '(' expression ')' | '-' factor.
 * @param {string} text
 * @returns {number}
 */
export function calculate(text) {
  const tokens = text.match(/\d+(?:\.\d+)?|[-+*/()]|\S/g) ?? [];
  let position = 0;
  const peek = () => tokens[position];
  const take = () => tokens[position++];
  /** @returns {number} */
  function expression() {
    let value = term();
    while (peek() === "+" || peek() === "-") value = take() === "+" ? value + term() : value - term();
    return value;
  }
  /** @returns {number} */
  function term() {
    let value = factor();
    while (peek() === "*" || peek() === "/") value = take() === "*" ? value * factor() : value / factor();
    return value;
  }
  /** @returns {number} */
  function factor() {
    const token = take();
    if (token === "-") return -factor();
    if (token === "(") {
      const value = expression();
      if (take() !== ")") throw new Error("a ( is not closed");
      return value;
    }
    if (token !== undefined && /^\d/.test(token)) return Number(token);
    throw new Error(`cannot calculate ${JSON.stringify(text)}`);
  }
  const value = expression();
  if (position !== tokens.length) throw new Error(`cannot calculate ${JSON.stringify(text)}`);
  return value;
}
