using System.Globalization;
using System.Text;

namespace QubesFirewall.Engine.Configuration;

/// <summary>
/// Reads the subset of PowerShell data (.psd1) that <see cref="ConfigurationWriter"/> writes, as data only:
/// nothing is evaluated, and anything outside the subset is refused with its line.
/// <para>The subset: one hashtable <c>@{ key = value ... }</c> (entries separated by new lines or <c>;</c>; keys bare
/// words <c>[A-Za-z_][A-Za-z0-9_]*</c> or single-quoted strings), arrays <c>@( value ... )</c> (items separated by new
/// lines or <c>,</c>), single-quoted strings (<c>''</c> for a quote; printable ASCII only, on one line), decimal
/// integers, <c>$true</c> and <c>$false</c>; comments <c>#</c> to the end of the line and <c>&lt;# ... #&gt;</c>.
/// Double-quoted strings, variables, sub-expressions, commands, casts and script blocks are refused: a file that
/// could run something is never read. Whatever this reads, PowerShell's own Import-PowerShellDataFile reads the same.</para>
/// </summary>
public sealed class Psd1Reader
{
    private readonly string _text;
    private int _pos;
    private int _line = 1;

    private Psd1Reader(string text) => _text = text;

    public static DataNode Parse(string text)
    {
        ArgumentNullException.ThrowIfNull(text);
        DataLimits.CheckSize(Encoding.UTF8.GetByteCount(text));
        var reader = new Psd1Reader(text.StartsWith('\uFEFF') ? text[1..] : text);
        reader.SkipBlank(newLines: true);
        if (reader.AtEnd) throw DataLimits.Error(reader._line, "the file is empty; it must hold one hashtable @{ ... }");
        if (!reader.Peek("@{")) throw DataLimits.Error(reader._line, "the file must hold one hashtable, starting with @{");
        var root = reader.ReadValue(0);
        reader.SkipBlank(newLines: true);
        if (!reader.AtEnd) throw reader.Unexpected("after the closing } of the file's hashtable");
        return root;
    }

    private bool AtEnd => _pos >= _text.Length;

    private char Current => _text[_pos];

    private bool Peek(string s) => string.CompareOrdinal(_text, _pos, s, 0, s.Length) == 0;

    private DataNode ReadValue(int depth)
    {
        if (depth >= DataLimits.MaxDepth) throw DataLimits.Error(_line, $"values are nested deeper than {DataLimits.MaxDepth} levels");
        if (AtEnd) throw DataLimits.Error(_line, "a value is missing at the end of the file");
        if (Peek("@{")) return ReadMap(depth);
        if (Peek("@(")) return ReadList(depth);
        var c = Current;
        if (c == '\'') return new DataString(_line, ReadString());
        if (c == '$') return ReadBoolean();
        if (char.IsAsciiDigit(c) || (c == '-' && _pos + 1 < _text.Length && char.IsAsciiDigit(_text[_pos + 1]))) return ReadInteger();
        if (c is '"' or '\u201C' or '\u201D' or '\u201E')
            throw DataLimits.Error(_line, "double-quoted strings are not read (PowerShell expands $variables and $(...) in them); use single quotes");
        throw Unexpected("where a value ('text', a number, $true, $false, @( ) or @{ }) was expected");
    }

    private DataMap ReadMap(int depth)
    {
        var line = _line;
        _pos += 2;
        var entries = new List<DataEntry>();
        var keys = new Dictionary<string, int>(StringComparer.OrdinalIgnoreCase);
        while (true)
        {
            SkipSeparators(';');
            if (AtEnd) throw DataLimits.Error(line, "the hashtable opened here is not closed with }");
            if (Current == '}') { _pos++; return new DataMap(line, entries); }
            var keyLine = _line;
            var key = ReadKey();
            // PowerShell's hashtables ignore the case of keys: Import-PowerShellDataFile refuses such duplicates too.
            if (keys.TryGetValue(key, out var first))
                throw DataLimits.Error(keyLine, $"the key '{key}' is given twice (first on line {first.ToString(CultureInfo.InvariantCulture)})");
            keys[key] = keyLine;
            SkipBlank(newLines: false);
            if (AtEnd || Current != '=') throw Unexpected($"after the key '{key}' (expected =)");
            _pos++;
            SkipBlank(newLines: false);
            var value = ReadValue(depth + 1);
            entries.Add(new DataEntry(key, keyLine, value));
            SkipBlank(newLines: false);
            if (AtEnd) continue;
            if (Current is not ('\n' or '\r' or ';' or '}' or '#') && !Peek("<#"))
                throw Unexpected($"after the value of '{key}' (one entry per line, or entries separated by ;)");
        }
    }

    private DataList ReadList(int depth)
    {
        var line = _line;
        _pos += 2;
        var items = new List<DataNode>();
        while (true)
        {
            SkipSeparators(',');
            if (AtEnd) throw DataLimits.Error(line, "the array opened here is not closed with )");
            if (Current == ')') { _pos++; return new DataList(line, items); }
            items.Add(ReadValue(depth + 1));
            SkipBlank(newLines: false);
            if (AtEnd) continue;
            if (Current is not ('\n' or '\r' or ',' or ')' or '#') && !Peek("<#"))
                throw Unexpected("after an item of the array (one item per line, or items separated by ,)");
        }
    }

    private string ReadKey()
    {
        if (Current == '\'') return ReadString();
        var start = _pos;
        if (!(char.IsAsciiLetter(Current) || Current == '_')) throw Unexpected("where a key (a word, or a 'quoted' name) was expected");
        while (!AtEnd && (char.IsAsciiLetterOrDigit(Current) || Current == '_')) _pos++;
        return _text[start.._pos];
    }

    private string ReadString()
    {
        var line = _line;
        _pos++; // opening quote
        var sb = new StringBuilder();
        while (true)
        {
            if (AtEnd) throw DataLimits.Error(line, "the string opened here is not closed with '");
            var c = Current;
            if (c == '\'')
            {
                if (_pos + 1 < _text.Length && _text[_pos + 1] == '\'') { sb.Append('\''); _pos += 2; continue; }
                _pos++;
                return sb.ToString();
            }
            if (c is '\n' or '\r') throw DataLimits.Error(line, "a string must end on the line it starts on");
            if (c is < ' ' or > '~')
                throw DataLimits.Error(line, $"a string holds {Model.RuleGrammar.Describe(c)}; values are printable ASCII only");
            if (sb.Length >= DataLimits.MaxStringLength) throw DataLimits.Error(line, $"a string is longer than {DataLimits.MaxStringLength} characters");
            sb.Append(c);
            _pos++;
        }
    }

    private DataBoolean ReadBoolean()
    {
        foreach (var (word, value) in new[] { ("$true", true), ("$false", false) })
        {
            if (string.Compare(_text, _pos, word, 0, word.Length, StringComparison.OrdinalIgnoreCase) != 0) continue;
            var end = _pos + word.Length;
            if (end < _text.Length && (char.IsAsciiLetterOrDigit(_text[end]) || _text[end] is '_' or ':' or '.' or '[' or '(')) break;
            _pos = end;
            return new DataBoolean(_line, value);
        }
        throw DataLimits.Error(_line, "variables are not read: the only $ words are $true and $false");
    }

    private DataInteger ReadInteger()
    {
        var start = _pos;
        if (Current == '-') _pos++;
        while (!AtEnd && char.IsAsciiDigit(Current)) _pos++;
        var text = _text[start.._pos];
        if (!AtEnd && (char.IsAsciiLetter(Current) || Current is '.' or '_'))
            throw DataLimits.Error(_line, "numbers are plain decimal integers (no fractions, suffixes or hexadecimal)");
        if (text.TrimStart('-').Length > 15 || !long.TryParse(text, NumberStyles.AllowLeadingSign, CultureInfo.InvariantCulture, out var value))
            throw DataLimits.Error(_line, $"the number {text} is too large");
        return new DataInteger(_line, value);
    }

    // Blanks, comments and, with newLines, line ends.
    private void SkipBlank(bool newLines)
    {
        while (!AtEnd)
        {
            var c = Current;
            if (c is ' ' or '\t') { _pos++; continue; }
            if (newLines && c == '\r') { _pos++; continue; }
            if (newLines && c == '\n') { _pos++; _line++; continue; }
            if (c == '#')
            {
                while (!AtEnd && Current != '\n') CheckCommentChar();
                continue;
            }
            if (Peek("<#"))
            {
                var line = _line;
                _pos += 2;
                while (!Peek("#>"))
                {
                    if (AtEnd) throw DataLimits.Error(line, "the comment opened here with <# is not closed with #>");
                    if (Current == '\n') _line++;
                    CheckCommentChar();
                }
                _pos += 2;
                continue;
            }
            return;
        }
    }

    private void CheckCommentChar()
    {
        var c = Current;
        if (c is < ' ' and not ('\t' or '\n' or '\r') || c == '\x7F')
            throw DataLimits.Error(_line, $"a comment holds {Model.RuleGrammar.Describe(c)}");
        _pos++;
    }

    private void SkipSeparators(char separator)
    {
        while (true)
        {
            SkipBlank(newLines: true);
            if (!AtEnd && Current == separator) { _pos++; continue; }
            return;
        }
    }

    private QubesFirewallException Unexpected(string where)
    {
        var c = Current;
        var what = c is >= ' ' and <= '~' ? $"'{c}'" : Model.RuleGrammar.Describe(c);
        return DataLimits.Error(_line, $"unexpected {what} {where}; only data is read (see Export-QubeNetworkConfiguration for the format)");
    }
}
