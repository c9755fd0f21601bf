"""The MLiP world: catalog, users, behaviour, the user/movie API and the event producer."""
