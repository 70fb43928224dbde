-- a migration that fails (used by the tests)
CREATE TABLE this_fails (;
