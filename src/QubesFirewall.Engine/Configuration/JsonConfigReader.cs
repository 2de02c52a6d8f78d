using System.Text;
using System.Text.Json;

namespace QubesFirewall.Engine.Configuration;

/// <summary>
/// Reads a JSON configuration file into <see cref="DataNode"/>s with System.Text.Json's reader: strict JSON
/// (comments skipped, no trailing commas), integers only, no null, each key once per object, the same size and
/// depth limits as the .psd1 reader; every node keeps its line for messages.
/// </summary>
public static class JsonConfigReader
{
    public static DataNode Parse(string text)
    {
        ArgumentNullException.ThrowIfNull(text);
        var bytes = Encoding.UTF8.GetBytes(text.StartsWith('\uFEFF') ? text[1..] : text);
        DataLimits.CheckSize(bytes.Length);
        var lineStarts = new List<int> { 0 };
        for (var i = 0; i < bytes.Length; i++) if (bytes[i] == '\n') lineStarts.Add(i + 1);
        int LineOf(long offset)
        {
            var index = lineStarts.BinarySearch((int)offset);
            return (index >= 0 ? index : ~index - 1) + 1;
        }

        var reader = new Utf8JsonReader(bytes, new JsonReaderOptions
        {
            CommentHandling = JsonCommentHandling.Skip,
            AllowTrailingCommas = false,
            MaxDepth = DataLimits.MaxDepth + 1,
        });
        try
        {
            if (!reader.Read()) throw DataLimits.Error(1, "the file is empty; it must hold one JSON object");
            if (reader.TokenType != JsonTokenType.StartObject) throw DataLimits.Error(LineOf(reader.TokenStartIndex), "the file must hold one JSON object { ... }");
            var root = ReadValue(ref reader, LineOf, 0);
            if (reader.Read()) throw DataLimits.Error(LineOf(reader.TokenStartIndex), "there is more after the file's object");
            return root;
        }
        catch (JsonException ex)
        {
            throw DataLimits.Error((int)(ex.LineNumber ?? 0) + 1, $"not valid JSON: {ex.Message}");
        }
    }

    private static DataNode ReadValue(ref Utf8JsonReader reader, Func<long, int> lineOf, int depth)
    {
        var line = lineOf(reader.TokenStartIndex);
        if (depth >= DataLimits.MaxDepth) throw DataLimits.Error(line, $"values are nested deeper than {DataLimits.MaxDepth} levels");
        switch (reader.TokenType)
        {
            case JsonTokenType.StartObject:
            {
                var entries = new List<DataEntry>();
                var seen = new HashSet<string>(StringComparer.OrdinalIgnoreCase);
                while (reader.Read() && reader.TokenType != JsonTokenType.EndObject)
                {
                    var keyLine = lineOf(reader.TokenStartIndex);
                    var key = reader.GetString()!;
                    CheckText(key, keyLine);
                    if (!seen.Add(key)) throw DataLimits.Error(keyLine, $"the key '{key}' is given twice");
                    reader.Read();
                    entries.Add(new DataEntry(key, keyLine, ReadValue(ref reader, lineOf, depth + 1)));
                }
                return new DataMap(line, entries);
            }
            case JsonTokenType.StartArray:
            {
                var items = new List<DataNode>();
                while (reader.Read() && reader.TokenType != JsonTokenType.EndArray)
                    items.Add(ReadValue(ref reader, lineOf, depth + 1));
                return new DataList(line, items);
            }
            case JsonTokenType.String:
            {
                var value = reader.GetString()!;
                CheckText(value, line);
                return new DataString(line, value);
            }
            case JsonTokenType.Number:
                if (!reader.TryGetInt64(out var number) || Math.Abs(number) > 999_999_999_999_999)
                    throw DataLimits.Error(line, "numbers are decimal integers of at most 15 digits");
                return new DataInteger(line, number);
            case JsonTokenType.True:
                return new DataBoolean(line, true);
            case JsonTokenType.False:
                return new DataBoolean(line, false);
            case JsonTokenType.Null:
                throw DataLimits.Error(line, "null is not a value here: leave the key out instead");
            default:
                throw DataLimits.Error(line, $"unexpected {reader.TokenType}");
        }
    }

    private static void CheckText(string value, int line)
    {
        if (value.Length > DataLimits.MaxStringLength) throw DataLimits.Error(line, $"a string is longer than {DataLimits.MaxStringLength} characters");
        foreach (var c in value)
            if (c is < ' ' or > '~') throw DataLimits.Error(line, $"a string holds {Model.RuleGrammar.Describe(c)}; values are printable ASCII only");
    }
}
