"""The user's own module, named like a part of proto2prod: proto2prod must never import it."""

raise RuntimeError("proto2prod imported the user's own prototype/__init__.py")
