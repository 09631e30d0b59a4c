"""The hosted face-migration API served by ComfyUI itself: the wire format (protocol), access rules
(access), API workflow templates (templates) and the hand-over of results from the graph to the waiting
request (mailbox). Plain Python: the ComfyUI side is nodes/server_route.py."""
