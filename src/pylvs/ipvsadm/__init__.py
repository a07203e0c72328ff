"""The ipvsadm front end: its grammar, listing and save formats."""
