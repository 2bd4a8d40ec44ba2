import js from '@eslint/js';
import tseslint from 'typescript-eslint';

export default tseslint.config(
  { ignores: ['dist/**', 'node_modules/**', 'coverage/**', 'var/**'] },
  js.configs.recommended,
  ...tseslint.configs.recommended,
  {
    rules: {
      '@typescript-eslint/no-unused-vars': ['error', { argsIgnorePattern: '^_' }],
      // The pipeline's listener reads `app` before it is built (port 0 first, then the stages).
      'prefer-const': ['error', { ignoreReadBeforeAssign: true }],
      // `\-` inside character classes is kept for readability of the id grammars.
      'no-useless-escape': 'warn',
      'no-console': 'off',
    },
  },
  {
    files: ['scripts/**/*.mjs', 'test/**/*.mjs'],
    languageOptions: { globals: { console: 'readonly' } },
  },
  {
    // Tests read FHIR JSON of many shapes.
    files: ['test/**/*.ts'],
    rules: { '@typescript-eslint/no-explicit-any': 'off' },
  },
);
