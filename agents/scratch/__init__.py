"""Scratch places a verification restores into: directories, throwaway database instances, scratch servers."""
