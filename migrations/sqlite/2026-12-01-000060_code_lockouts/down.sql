DROP TABLE lockouts;
DROP TABLE code_guesses;
