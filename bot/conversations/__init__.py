"""What a conversation keeps and how people steer it: history, personas, `/persona` and
`/forget`, feedback, edits, the order messages arrive in, text made safe."""
