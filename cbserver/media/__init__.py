"""Media: RTP sessions, G.711, the shared media clock, prompts, DTMF and the leg relay."""
