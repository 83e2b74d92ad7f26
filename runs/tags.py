"""Tag rules, in one place: what a tag may be and which tags the system owns."""

from __future__ import annotations

SYSTEM_PREFIXES = ("user:", "production:", "runtime:", "python_version:", "flowsite_version:")
MAX_TAG_LENGTH = 500
MAX_USER_TAGS = 50


class TagRuleError(ValueError):
    """A tag breaks a rule. `code` names the rule for API clients."""

    def __init__(self, message: str, code: str = "invalid_tag"):
        super().__init__(message)
        self.code = code


def is_system_tag(tag: str) -> bool:
    return tag.startswith(SYSTEM_PREFIXES)


def validate_tag(tag) -> str:
    """Return the tag unchanged if it is valid, else raise TagRuleError."""
    if not isinstance(tag, str):
        raise TagRuleError(f"A tag must be a string, not {type(tag).__name__}.")
    if tag == "":
        raise TagRuleError("A tag cannot be empty.")
    if len(tag) > MAX_TAG_LENGTH:
        raise TagRuleError(
            f"The tag {tag[:40]!r}... is {len(tag)} characters long; the limit is "
            f"{MAX_TAG_LENGTH}."
        )
    if "\x00" in tag:
        raise TagRuleError("A tag cannot contain the NUL character (\\x00).")
    if any(0xD800 <= ord(ch) <= 0xDFFF for ch in tag):
        raise TagRuleError("A tag cannot contain unpaired surrogate characters.")
    return tag


def validate_user_tag(tag) -> str:
    tag = validate_tag(tag)
    if is_system_tag(tag):
        prefix = tag.split(":", 1)[0]
        raise TagRuleError(
            f"The tag {tag!r} starts with the system prefix '{prefix}:'. System tags are "
            "set by Flowsite and cannot be added by hand; choose another name.",
            code="system_tag",
        )
    return tag
