// The parser of a cmdlet help page in PlatyPS's markdown layout into the model of DocModel.cs:
// sections in order, the yaml of each parameter, examples, inputs, outputs and links.
using System.Globalization;
using System.Text;
using System.Text.RegularExpressions;
using Markdig;
using Markdig.Extensions.Yaml;
using Markdig.Syntax;
using Markdig.Syntax.Inlines;

namespace QubesFirewall.HelpBuilder;

public static partial class CmdletDocParser
{
    /// <summary>The level-2 headings of a cmdlet page, in the order they must appear.</summary>
    public static readonly IReadOnlyList<string> Sections =
        ["SYNOPSIS", "SYNTAX", "DESCRIPTION", "EXAMPLES", "PARAMETERS", "INPUTS", "OUTPUTS", "NOTES", "RELATED LINKS"];

    /// <summary>The keys every parameter yaml block must have.</summary>
    public static readonly IReadOnlyList<string> RequiredYamlKeys =
        ["Type", "Parameter Sets", "Aliases", "Required", "Position", "Default value", "Accept pipeline input", "Accept wildcard characters"];

    static readonly string[] OptionalYamlKeys = ["Accepted values", "Applicable"];

    static readonly MarkdownPipeline Pipeline = new MarkdownPipelineBuilder().UseYamlFrontMatter().Build();

    /// <summary>
    /// Parses every *.md file in <paramref name="directory"/> (not recursive), in ordinal name order.
    /// Module pages are listed apart; malformed pages end up in <see cref="DocSet.Errors"/>.
    /// </summary>
    public static DocSet ParseDirectory(string directory)
    {
        var cmdlets = new List<CmdletDoc>();
        var modulePages = new List<string>();
        var errors = new List<DocFormatException>();
        foreach (var path in Directory.GetFiles(directory, "*.md").Order(StringComparer.Ordinal))
        {
            try
            {
                var doc = ParseFile(path);
                if (doc is null) modulePages.Add(path);
                else cmdlets.Add(doc);
            }
            catch (DocFormatException e)
            {
                errors.Add(e);
            }
        }
        foreach (var dup in cmdlets.GroupBy(c => c.Name, StringComparer.OrdinalIgnoreCase).Where(g => g.Count() > 1))
            errors.Add(new DocFormatException(dup.Last().SourcePath, 1, $"cmdlet {dup.Key} is documented twice"));
        return new DocSet(cmdlets, modulePages, errors);
    }

    /// <summary>Parses one page; null when it is a module page; throws <see cref="DocFormatException"/> when malformed.</summary>
    public static CmdletDoc? ParseFile(string path) => Parse(File.ReadAllText(path), path);

    /// <summary>
    /// Parses markdown text. <paramref name="sourcePath"/> names the file in errors, and its
    /// file name (if it ends in .md) must match the cmdlet name.
    /// Returns null for a module page (no <c>## SYNOPSIS</c>, and a <c># Name Module</c> title or a Module Guid).
    /// </summary>
    public static CmdletDoc? Parse(string markdown, string sourcePath)
    {
        return new PageParser(markdown, sourcePath).Parse();
    }

    /// <summary>Renders a block's inlines (paragraph, heading) as plain text.</summary>
    internal static string InlineText(ContainerInline? container)
    {
        if (container is null) return "";
        var sb = new StringBuilder();
        AppendInlines(sb, container);
        return sb.ToString().Trim();
    }

    static void AppendInlines(StringBuilder sb, ContainerInline container)
    {
        foreach (var inline in container)
        {
            switch (inline)
            {
                case LiteralInline lit: sb.Append(lit.Content.ToString()); break;
                case CodeInline code: sb.Append(code.Content); break;
                case LineBreakInline br: sb.Append(br.IsHard ? "\n" : " "); break;
                case AutolinkInline auto: sb.Append(auto.Url); break;
                case HtmlEntityInline ent: sb.Append(ent.Transcoded.ToString()); break;
                case HtmlInline: break; // e.g. <br> or comments: dropped
                case LinkInline link when link.IsImage: AppendInlines(sb, link); break;
                case ContainerInline inner: AppendInlines(sb, inner); break;
                default: sb.Append(inline.ToString()); break;
            }
        }
    }

    /// <summary>Plain text of a non-heading block: paragraphs, lists (one "- item" per line), code, quotes.</summary>
    internal static string BlockText(Block block) => block switch
    {
        ParagraphBlock p => InlineText(p.Inline),
        FencedCodeBlock or CodeBlock => ((LeafBlock)block).Lines.ToString().TrimEnd(),
        ListBlock list => string.Join("\n", list.OfType<ListItemBlock>().Select((item, i) =>
            (list.IsOrdered ? $"{i + 1}. " : "- ") +
            string.Join("\n  ", item.Select(BlockText).Where(t => t.Length > 0)))),
        QuoteBlock q => string.Join("\n", q.Select(BlockText)),
        ContainerBlock c => string.Join("\n", c.Select(BlockText)),
        LeafBlock leaf when leaf.Inline is not null => InlineText(leaf.Inline),
        _ => "",
    };

    [GeneratedRegex(@"^[A-Za-z]+-[A-Za-z0-9]+$")]
    private static partial Regex CmdletNameRegex();

    [GeneratedRegex(@"(?<=[\s\[])-([A-Za-z_][A-Za-z0-9_]*)")]
    private static partial Regex SyntaxParameterRegex();

    [GeneratedRegex(@"^True \((By(Value|PropertyName))(, ?By(Value|PropertyName))?\)$", RegexOptions.IgnoreCase)]
    private static partial Regex PipelineInputRegex();

    sealed class PageParser
    {
        readonly string file;
        readonly List<Block> blocks;
        readonly Dictionary<string, string> frontMatter = new(StringComparer.OrdinalIgnoreCase);

        public PageParser(string markdown, string file)
        {
            this.file = file;
            var document = Markdown.Parse(markdown, Pipeline);
            blocks = [];
            foreach (var block in document)
            {
                switch (block)
                {
                    case YamlFrontMatterBlock yaml: ReadFrontMatter(yaml); break;
                    case HtmlBlock: break; // comments are not help text
                    case LinkReferenceDefinitionGroup: break;
                    default: blocks.Add(block); break;
                }
            }
        }

        DocFormatException Error(int line, string problem) => new(file, line, problem);
        DocFormatException Error(Block block, string problem) => Error(block.Line + 1, problem);

        void ReadFrontMatter(YamlFrontMatterBlock yaml)
        {
            foreach (var (key, value, _) in KeyValues(yaml, allowBare: true))
                frontMatter[key] = value;
        }

        /// <summary>"Key: Value" lines of a yaml-ish block, with their 1-based line numbers.</summary>
        IEnumerable<(string Key, string Value, int Line)> KeyValues(LeafBlock block, bool allowBare)
        {
            var lines = block.Lines;
            for (var i = 0; i < lines.Count; i++)
            {
                var text = lines.Lines[i].Slice.ToString();
                var lineNo = lines.Lines[i].Line + 1;
                if (string.IsNullOrWhiteSpace(text) || text.Trim() == "---") continue;
                var colon = text.IndexOf(':');
                if (colon <= 0)
                {
                    if (allowBare) continue;
                    throw Error(lineNo, $"expected 'Key: Value' in the yaml block, found '{text.Trim()}'");
                }
                yield return (text[..colon].Trim(), text[(colon + 1)..].Trim(), lineNo);
            }
        }

        static string HeadingText(Block b) => b is HeadingBlock h ? InlineText(h.Inline) : "";
        static bool IsHeading(Block b, int level) => b is HeadingBlock h && h.Level == level;

        public CmdletDoc? Parse()
        {
            var titleBlock = blocks.FirstOrDefault();
            if (titleBlock is not HeadingBlock { Level: 1 })
                throw Error(titleBlock?.Line + 1 ?? 1, "the page must start with a '# Verb-Noun' heading");
            var title = HeadingText(titleBlock);

            var h2 = blocks.Where(b => IsHeading(b, 2)).ToList();
            var hasSynopsis = h2.Any(b => string.Equals(HeadingText(b), "SYNOPSIS", StringComparison.OrdinalIgnoreCase));
            if (!hasSynopsis && (title.EndsWith(" Module", StringComparison.OrdinalIgnoreCase) || frontMatter.ContainsKey("Module Guid")))
                return null; // a module page

            if (!CmdletNameRegex().IsMatch(title))
                throw Error(titleBlock, $"the title '# {title}' is not a cmdlet name (Verb-Noun)");
            var fileName = Path.GetFileName(file);
            if (fileName.EndsWith(".md", StringComparison.OrdinalIgnoreCase)
                && !string.Equals(Path.GetFileNameWithoutExtension(fileName), title, StringComparison.OrdinalIgnoreCase))
                throw Error(titleBlock, $"the title '# {title}' does not match the file name '{fileName}'");
            if (blocks.Skip(1).FirstOrDefault(b => IsHeading(b, 1)) is { } secondTitle)
                throw Error(secondTitle, "only one '#' heading is allowed");

            var sections = SplitSections(titleBlock);

            var synopsis = Paragraphs(sections["SYNOPSIS"]);
            if (synopsis.Count == 0) throw Error(sections["SYNOPSIS"].Heading, "## SYNOPSIS is empty");
            var description = Paragraphs(sections["DESCRIPTION"]);
            if (description.Count == 0) throw Error(sections["DESCRIPTION"].Heading, "## DESCRIPTION is empty");

            var syntax = ParseSyntax(sections["SYNTAX"], title);
            var parameters = ParseParameters(sections["PARAMETERS"]);
            CheckSyntaxAgainstParameters(syntax, parameters);

            return new CmdletDoc
            {
                SourcePath = file,
                FrontMatter = frontMatter,
                Name = title,
                Synopsis = string.Join(" ", synopsis),
                Description = description,
                Syntax = syntax,
                Parameters = parameters,
                Examples = ParseExamples(sections["EXAMPLES"]),
                Inputs = ParseTypes(sections["INPUTS"]),
                Outputs = ParseTypes(sections["OUTPUTS"]),
                Notes = Paragraphs(sections["NOTES"]),
                RelatedLinks = ParseLinks(sections["RELATED LINKS"]),
            };
        }

        sealed record Section(HeadingBlock Heading, List<Block> Body);

        Dictionary<string, Section> SplitSections(Block titleBlock)
        {
            var result = new Dictionary<string, Section>(StringComparer.OrdinalIgnoreCase);
            Section? current = null;
            var expected = 0; // index into Sections of the next allowed heading
            foreach (var block in blocks.Skip(1))
            {
                if (block is HeadingBlock { Level: 2 } heading)
                {
                    var name = HeadingText(heading).ToUpperInvariant();
                    var index = Sections.ToList().IndexOf(name);
                    if (index < 0)
                        throw Error(heading, $"unknown section '## {HeadingText(heading)}' (expected one of: {string.Join(", ", Sections)})");
                    if (result.ContainsKey(name))
                        throw Error(heading, $"section '## {name}' appears twice");
                    if (index < expected)
                        throw Error(heading, $"section '## {name}' is out of order (sections go: {string.Join(", ", Sections)})");
                    if (index > expected)
                        throw Error(heading, $"missing section '## {Sections[expected]}' before '## {name}'");
                    expected = index + 1;
                    current = new Section(heading, []);
                    result[name] = current;
                }
                else if (current is null)
                {
                    throw Error(block, "unexpected content before '## SYNOPSIS'");
                }
                else
                {
                    current.Body.Add(block);
                }
            }
            if (expected < Sections.Count)
            {
                var lastLine = blocks.Count > 0 ? blocks[^1].Line + 1 : titleBlock.Line + 1;
                throw Error(lastLine, $"missing section '## {Sections[expected]}'");
            }
            return result;
        }

        /// <summary>Splits a section body on level-3 headings; content before the first one is an error.</summary>
        List<(HeadingBlock Heading, string Title, List<Block> Body)> SubSections(Section section)
        {
            var result = new List<(HeadingBlock, string, List<Block>)>();
            foreach (var block in section.Body)
            {
                if (block is HeadingBlock { Level: 3 } h)
                    result.Add((h, HeadingText(h), []));
                else if (block is HeadingBlock other)
                    throw Error(other, $"unexpected level-{other.Level} heading in '## {HeadingText(section.Heading)}' (use '###')");
                else if (result.Count == 0)
                    throw Error(block, $"unexpected text in '## {HeadingText(section.Heading).ToUpperInvariant()}' before its first '###' heading");
                else
                    result[^1].Item3.Add(block);
            }
            return result;
        }

        List<string> Paragraphs(Section section) => Paragraphs(section.Body);

        List<string> Paragraphs(IEnumerable<Block> body)
        {
            var result = new List<string>();
            foreach (var block in body)
            {
                if (block is HeadingBlock h)
                    throw Error(h, $"unexpected heading '{new string('#', h.Level)} {HeadingText(h)}'");
                if (block is ThematicBreakBlock) continue;
                var text = BlockText(block);
                if (text.Length > 0) result.Add(text);
            }
            return result;
        }

        List<SyntaxDoc> ParseSyntax(Section section, string cmdletName)
        {
            var result = new List<SyntaxDoc>();
            var subs = SubSections(section);
            if (subs.Count == 0)
                throw Error(section.Heading, "## SYNTAX has no '### ParameterSetName' block (use '### __AllParameterSets' for a cmdlet without sets)");
            foreach (var (heading, rawTitle, body) in subs)
            {
                var setName = rawTitle;
                var isDefault = false;
                if (setName.EndsWith("(Default)", StringComparison.OrdinalIgnoreCase))
                {
                    isDefault = true;
                    setName = setName[..^"(Default)".Length].Trim();
                }
                if (setName.Length == 0) throw Error(heading, "empty parameter set name in ## SYNTAX");
                if (result.Any(s => string.Equals(s.ParameterSetName, setName, StringComparison.OrdinalIgnoreCase)))
                    throw Error(heading, $"parameter set '{setName}' appears twice in ## SYNTAX");
                var code = body.OfType<FencedCodeBlock>().ToList();
                if (code.Count != 1)
                    throw Error(heading, $"syntax block '### {rawTitle}' must hold exactly one fenced code block with the syntax line (found {code.Count})");
                if (body.FirstOrDefault(b => b is not FencedCodeBlock) is { } stray)
                    throw Error(stray, $"unexpected text in syntax block '### {rawTitle}'");
                var line = string.Join(" ", code[0].Lines.ToString()
                    .Split('\n', StringSplitOptions.RemoveEmptyEntries | StringSplitOptions.TrimEntries));
                if (!line.StartsWith(cmdletName + " ", StringComparison.OrdinalIgnoreCase) && !string.Equals(line, cmdletName, StringComparison.OrdinalIgnoreCase))
                    throw Error(code[0], $"the syntax line of '### {rawTitle}' must start with '{cmdletName}'");
                var names = new List<string>();
                foreach (Match m in SyntaxParameterRegex().Matches(line[cmdletName.Length..]))
                    if (!names.Contains(m.Groups[1].Value, StringComparer.OrdinalIgnoreCase))
                        names.Add(m.Groups[1].Value);
                result.Add(new SyntaxDoc(setName, isDefault, line, names, code[0].Line + 1));
            }
            if (result.Count(s => s.IsDefault) > 1)
                throw Error(section.Heading, "more than one parameter set is marked (Default)");
            return result;
        }

        List<ParameterDoc> ParseParameters(Section section)
        {
            var result = new List<ParameterDoc>();
            foreach (var (heading, title, body) in SubSections(section))
            {
                if (string.Equals(title, "CommonParameters", StringComparison.OrdinalIgnoreCase)) continue;
                if (!title.StartsWith('-') || title.Length < 2 || title.Contains(' '))
                    throw Error(heading, $"parameter heading '### {title}' must be '### -Name' (or '### CommonParameters')");
                var name = title[1..];
                if (result.Any(p => string.Equals(p.Name, name, StringComparison.OrdinalIgnoreCase)))
                    throw Error(heading, $"parameter -{name} is documented twice");

                var yamlBlocks = body.OfType<FencedCodeBlock>().Where(c => string.Equals(c.Info?.Trim(), "yaml", StringComparison.OrdinalIgnoreCase)).ToList();
                if (yamlBlocks.Count == 0)
                    throw Error(heading, $"parameter -{name} has no ```yaml block (Type, Parameter Sets, Aliases, Required, Position, Default value, Accept pipeline input, Accept wildcard characters)");
                var description = Paragraphs(body.Where(b => b is not FencedCodeBlock fc || !yamlBlocks.Contains(fc)));
                if (description.Count == 0)
                    throw Error(heading, $"parameter -{name} has no description");

                string? type = null;
                List<string>? aliases = null;
                var attributes = new List<ParameterAttributes>();
                foreach (var yaml in yamlBlocks)
                {
                    var values = new Dictionary<string, (string Value, int Line)>(StringComparer.OrdinalIgnoreCase);
                    foreach (var (key, value, line) in KeyValues(yaml, allowBare: false))
                    {
                        var known = RequiredYamlKeys.Concat(OptionalYamlKeys).FirstOrDefault(k => string.Equals(k, key, StringComparison.OrdinalIgnoreCase));
                        if (known is null)
                            throw Error(line, $"unknown key '{key}' in the yaml block of -{name}");
                        if (!values.TryAdd(known, (value, line)))
                            throw Error(line, $"key '{known}' appears twice in the yaml block of -{name}");
                    }
                    foreach (var key in RequiredYamlKeys)
                        if (!values.ContainsKey(key))
                            throw Error(yaml, $"the yaml block of -{name} has no '{key}:'");

                    var thisType = values["Type"].Value;
                    if (thisType.Length == 0) throw Error(values["Type"].Line, $"-{name} has an empty Type");
                    if (type is not null && type != thisType)
                        throw Error(values["Type"].Line, $"-{name} has different types in its yaml blocks ('{type}', '{thisType}')");
                    type = thisType;
                    var thisAliases = SplitList(values["Aliases"].Value);
                    aliases ??= thisAliases;

                    var sets = SplitList(values["Parameter Sets"].Value);
                    if (sets.Count == 0) throw Error(values["Parameter Sets"].Line, $"-{name} names no parameter set (write '(All)' for every set)");
                    foreach (var s in sets)
                        if (attributes.Any(a => a.ParameterSets.Contains(s, StringComparer.OrdinalIgnoreCase)))
                            throw Error(values["Parameter Sets"].Line, $"-{name} lists set '{s}' in two yaml blocks");

                    attributes.Add(new ParameterAttributes(
                        sets,
                        Bool(values["Required"], name, "Required"),
                        Position(values["Position"], name),
                        values["Default value"].Value,
                        PipelineInputOf(values["Accept pipeline input"], name),
                        Bool(values["Accept wildcard characters"], name, "Accept wildcard characters"),
                        values.TryGetValue("Accepted values", out var av) ? SplitList(av.Value) : []));
                }
                result.Add(new ParameterDoc
                {
                    Name = name,
                    Description = description,
                    Type = type!,
                    Aliases = aliases ?? [],
                    Attributes = attributes,
                    Line = heading.Line + 1,
                });
            }
            return result;
        }

        static List<string> SplitList(string value) =>
            string.Equals(value, "None", StringComparison.OrdinalIgnoreCase)
                ? []
                : value.Split(',', StringSplitOptions.RemoveEmptyEntries | StringSplitOptions.TrimEntries).ToList();

        bool Bool((string Value, int Line) v, string param, string key) =>
            v.Value.ToLowerInvariant() switch
            {
                "true" => true,
                "false" => false,
                _ => throw Error(v.Line, $"'{key}' of -{param} must be True or False, not '{v.Value}'"),
            };

        int? Position((string Value, int Line) v, string param)
        {
            if (string.Equals(v.Value, "Named", StringComparison.OrdinalIgnoreCase)) return null;
            if (int.TryParse(v.Value, NumberStyles.None, CultureInfo.InvariantCulture, out var n)) return n;
            throw Error(v.Line, $"'Position' of -{param} must be Named or a number, not '{v.Value}'");
        }

        PipelineInput PipelineInputOf((string Value, int Line) v, string param)
        {
            if (string.Equals(v.Value, "False", StringComparison.OrdinalIgnoreCase)) return PipelineInput.None;
            var m = PipelineInputRegex().Match(v.Value);
            if (!m.Success)
                throw Error(v.Line, $"'Accept pipeline input' of -{param} must be False, True (ByValue), True (ByPropertyName) or True (ByPropertyName, ByValue), not '{v.Value}'");
            var result = PipelineInput.None;
            foreach (var g in new[] { m.Groups[2].Value, m.Groups[4].Value })
            {
                if (string.Equals(g, "Value", StringComparison.OrdinalIgnoreCase)) result |= PipelineInput.ByValue;
                if (string.Equals(g, "PropertyName", StringComparison.OrdinalIgnoreCase)) result |= PipelineInput.ByPropertyName;
            }
            return result;
        }

        void CheckSyntaxAgainstParameters(List<SyntaxDoc> syntax, List<ParameterDoc> parameters)
        {
            var setNames = syntax.Select(s => s.ParameterSetName).ToList();
            foreach (var p in parameters)
                foreach (var set in p.ParameterSets)
                    if (set != ParameterAttributes.AllSets && !setNames.Contains(set, StringComparer.OrdinalIgnoreCase))
                        throw Error(p.Line, $"-{p.Name} names parameter set '{set}', which ## SYNTAX does not have (sets: {string.Join(", ", setNames)})");
            foreach (var s in syntax)
            {
                foreach (var name in s.ParameterNames)
                {
                    var p = parameters.FirstOrDefault(x => string.Equals(x.Name, name, StringComparison.OrdinalIgnoreCase))
                        ?? throw Error(s.Line, $"the syntax of '{s.ParameterSetName}' uses -{name}, which ## PARAMETERS does not document");
                    if (!p.BelongsTo(s.ParameterSetName))
                        throw Error(s.Line, $"the syntax of '{s.ParameterSetName}' uses -{name}, whose 'Parameter Sets:' does not include it");
                }
                foreach (var p in parameters.Where(p => p.BelongsTo(s.ParameterSetName)))
                    if (!s.ParameterNames.Contains(p.Name, StringComparer.OrdinalIgnoreCase))
                        throw Error(s.Line, $"-{p.Name} is in parameter set '{s.ParameterSetName}' but missing from its syntax line");
            }
        }

        List<ExampleDoc> ParseExamples(Section section)
        {
            var result = new List<ExampleDoc>();
            foreach (var (heading, title, body) in SubSections(section))
            {
                var codeBlocks = new List<string>();
                var remarks = new List<string>();
                foreach (var block in body)
                {
                    // The command: the powershell blocks before any text. An ```Output block or a
                    // block after the text belongs to the remarks.
                    if (block is FencedCodeBlock fc && remarks.Count == 0 && IsPowerShellInfo(fc.Info))
                        codeBlocks.Add(fc.Lines.ToString().TrimEnd());
                    else if (block is not ThematicBreakBlock && BlockText(block) is { Length: > 0 } text)
                        remarks.Add(text);
                }
                if (codeBlocks.Count == 0)
                    throw Error(heading, $"example '### {title}' has no ```powershell code block before its text");
                result.Add(new ExampleDoc(title, string.Join("\n\n", codeBlocks), remarks));
            }
            if (result.Count == 0)
                throw Error(section.Heading, "## EXAMPLES has no '### Example 1: …'");
            return result;
        }

        static bool IsPowerShellInfo(string? info) =>
            string.IsNullOrWhiteSpace(info) || info.Trim().ToLowerInvariant() is "powershell" or "ps" or "pwsh" or "ps1" or "posh";

        List<TypeDoc> ParseTypes(Section section) =>
            SubSections(section).Select(s => new TypeDoc(s.Title, Paragraphs(s.Body))).ToList();

        List<LinkDoc> ParseLinks(Section section)
        {
            var result = new List<LinkDoc>();
            foreach (var block in section.Body)
            {
                if (block is HeadingBlock h) throw Error(h, "unexpected heading in ## RELATED LINKS");
                var paragraphs = block is ParagraphBlock self ? [self] : block.Descendants<ParagraphBlock>().ToList();
                foreach (var p in paragraphs)
                {
                    var found = false;
                    foreach (var inline in p.Inline?.Descendants<Inline>() ?? [])
                    {
                        switch (inline)
                        {
                            case LinkInline { IsImage: false } link:
                                var text = InlineText(link);
                                var url = link.Url ?? "";
                                var absolute = Uri.TryCreate(url, UriKind.Absolute, out var u) && u.Scheme is "http" or "https";
                                result.Add(new LinkDoc(text.Length == 0 ? url : text, absolute ? url : null));
                                found = true;
                                break;
                            case AutolinkInline auto:
                                result.Add(new LinkDoc(auto.Url, auto.Url));
                                found = true;
                                break;
                        }
                    }
                    // A bare name with no link (e.g. "Get-Qube") still counts as a related command.
                    if (!found && InlineText(p.Inline) is { Length: > 0 } bare)
                        result.Add(new LinkDoc(bare, null));
                }
            }
            return result;
        }
    }
}
