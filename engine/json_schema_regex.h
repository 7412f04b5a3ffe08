// JsonSchemaRegex: a JSON Schema as a TokenGuide pattern (token_guide.h)
// whose whole matches are JSON texts valid under the schema, for guided
// decoding of JSON. The JSON is compact, with at most one space after each
// ':' and ',' (so `{"a": 1, "b": [true]}` and `{"a":1,"b":[true]}` both
// match), object properties come in the order the schema lists them, and
// only listed properties appear (those not `required` may be left out).
//
// Supported keywords: type (a name or a list of names: string, integer,
// number, boolean, null, object, array), properties, required, items,
// minItems, maxItems, minLength, maxLength (counts up to 1000), enum,
// const, anyOf and oneOf (as "any of": oneOf's exclusivity is not
// enforced on what is generated). The keywords beside enum or const filter
// their values (`{"type": "string", "enum": ["a", 1]}` writes only "a",
// oneOf there exactly one), and a schema whose values they all rule out is
// refused; anyOf and oneOf take only annotations beside them (any other
// keyword there is refused: it belongs in each branch).
// additionalProperties changes nothing when only listed properties are
// written; annotations are ignored (title, description, default, examples,
// $schema, $id, $comment). Any other keyword (pattern, minimum, $ref,
// allOf, format, ...) is refused, naming it and where it is (a JSON
// pointer), rather than silently not enforced.
//
// Thread-safety: a pure function.
#pragma once

#include <string>
#include <string_view>

#include "engine/status.h"

namespace modserve {

// What to change in a schema whose pattern is too large for a TokenGuide
// (TokenGuide::FromRegex's size_hint): each character a string's maxLength
// allows takes about 32 automaton states, and each item maxItems allows all
// of its item schema's.
inline constexpr const char* kJsonSchemaSizeHint =
    "smaller maxLength or maxItems (each array item repeats its schema's states), or fewer properties, enum values or "
    "anyOf branches";

// INVALID_ARGUMENT "<field>: ..." for text that is not JSON, a schema that is
// not an object (or true), an unsupported keyword, or a count over 1000.
StatusOr<std::string> JsonSchemaRegex(std::string_view schema, const std::string& field);

}  // namespace modserve
