"""What the bot remembers per chat (and user): the chosen collection, the last turns, and
what it is waiting for. Kept in aiogram's FSM storage (memory, or Redis with a TTL)."""

from dataclasses import asdict, dataclass, field
from typing import Any

from aiogram.fsm.context import FSMContext

from app.chain.types import Turn


@dataclass
class PendingUpload:
    """A document an owner sent while the bot asks which collection it goes to."""

    file_id: str
    file_name: str
    size: int


@dataclass
class Conversation:
    """The state of one conversation."""

    collection: str | None = None
    history: list[list[str]] = field(default_factory=list)
    # A clarifying question waiting for an option: the original question and the options.
    question: str | None = None
    options: list[str] = field(default_factory=list)
    uploads: list[PendingUpload] = field(default_factory=list)
    # (collection, doc_id) waiting for the delete confirmation.
    delete: list[str] | None = None
    # The trace whose thumbs-down waits for a one-line comment.
    comment_for: str | None = None

    def turns(self) -> list[Turn]:
        """The history as chain turns."""
        return [
            Turn("user" if role == "user" else "assistant", text) for role, text in self.history
        ]

    def remember(self, question: str, answer: str, keep_turns: int) -> None:
        """Add a question and its answer; keep the last keep_turns pairs."""
        self.history.extend([["user", question], ["assistant", answer]])
        self.history = self.history[-2 * keep_turns :] if keep_turns else []


async def load(state: FSMContext) -> Conversation:
    """The conversation stored for this chat and user (a fresh one when there is none)."""
    data: dict[str, Any] = await state.get_data()
    uploads = [PendingUpload(**u) for u in data.get("uploads", [])]
    known = {k: v for k, v in data.items() if k in Conversation.__dataclass_fields__}
    known["uploads"] = uploads
    return Conversation(**known)


async def save(state: FSMContext, conversation: Conversation) -> None:
    """Store the conversation (plain JSON types, so Redis storage works)."""
    await state.set_data(asdict(conversation))
