"""The knowledge loop: unanswered questions reach the owners, feedback reaches support staff."""
