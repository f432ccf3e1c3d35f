import type { Address as AddressProto } from "./gen/twinflow/v1/types_pb.js";

/**
 * An address names one function instance: a function type
 * ("namespace/name") and an instance id. Every address has its own state.
 */
export interface Address {
  /** The function type, "namespace/name", e.g. "datacenter/server". */
  readonly type: string;
  /** The instance id, any non-empty string, e.g. "srv-0042". */
  readonly id: string;
}

/** Returns "type/id", e.g. "datacenter/server/srv-0042". */
export function addressString(a: Address): string {
  return `${a.type}/${a.id}`;
}

/**
 * Returns why a is not a well-formed address (a valid function type and a
 * non-empty id of well-formed Unicode), or undefined when it is.
 */
export function addressProblem(a: Address): string | undefined {
  const p = functionTypeProblem(a.type);
  if (p !== undefined) {
    return p;
  }
  if (a.id === "") {
    return "address id is empty";
  }
  if (!isWellFormed(a.id)) {
    return "address id is not valid UTF-8";
  }
  return undefined;
}

export function addressFromProto(a: AddressProto | undefined): Address {
  return { type: a?.type ?? "", id: a?.id ?? "" };
}

/**
 * Returns why s is not a function type: exactly one slash with both parts
 * non-empty. Module specs match function types by namespace
 * ("namespace/*"), so a second slash would be ambiguous.
 */
export function functionTypeProblem(s: string): string | undefined {
  const p = nameProblem(s);
  if (p !== undefined) {
    return `function type ${quote(s)}: ${p}`;
  }
  if (s.indexOf("/") !== s.lastIndexOf("/")) {
    return `function type ${quote(s)}: want exactly one '/' as in "namespace/name"`;
  }
  return undefined;
}

/**
 * Returns why s is not a typename: "namespace/name" with both parts
 * non-empty. Unlike a function type, the name may hold more slashes.
 */
export function typenameProblem(s: string): string | undefined {
  const p = nameProblem(s);
  return p === undefined ? undefined : `typename ${quote(s)}: ${p}`;
}

// Spaces and control characters as Go's unicode.IsSpace and
// unicode.IsControl see them: they would break subjects, logs and CLIs.
const spaceOrControl = /[\p{Cc}\p{Z}]/u;

function nameProblem(s: string): string | undefined {
  const i = s.indexOf("/");
  if (i <= 0 || i === s.length - 1) {
    return `want "namespace/name" with both parts non-empty`;
  }
  if (!isWellFormed(s)) {
    return "not valid UTF-8";
  }
  if (spaceOrControl.test(s)) {
    return "contains a space or control character";
  }
  return undefined;
}

// A string with a lone surrogate has no UTF-8 encoding.
function isWellFormed(s: string): boolean {
  return (s as unknown as { isWellFormed(): boolean }).isWellFormed();
}

/** Quotes s as Go's %q does for the strings in messages. */
export function quote(s: string): string {
  return JSON.stringify(s);
}
