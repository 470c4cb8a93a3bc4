"""The conversation sidebar: New chat, full-text search with highlighted hits, history newest first."""

from __future__ import annotations

import math
import time
from datetime import datetime, timedelta

from PySide6.QtCore import QModelIndex, QPersistentModelIndex, QPoint, QSize, Qt, QTimer, Signal
from PySide6.QtGui import QAction, QFont, QFontMetrics, QKeySequence, QPainter, QTextDocument
from PySide6.QtWidgets import (
    QAbstractItemView,
    QApplication,
    QFrame,
    QLabel,
    QLineEdit,
    QListWidget,
    QListWidgetItem,
    QMenu,
    QPushButton,
    QStackedWidget,
    QStyle,
    QStyledItemDelegate,
    QStyleOptionViewItem,
    QVBoxLayout,
    QWidget,
)

from app.core.store import ConversationRow, Store, StoreError, snippet_to_html
from app.ui import style

_CID = Qt.ItemDataRole.UserRole
_MID = Qt.ItemDataRole.UserRole + 1
LIST_PAGE = 100
SEARCH_DELAY_MS = 180
SEARCH_LIMIT = 50


def day_group(ts: float, now: float | None = None) -> str:
    """The heading a conversation is listed under, by its last activity."""
    today = datetime.fromtimestamp(now if now is not None else time.time()).date()
    day = datetime.fromtimestamp(ts).date()
    if day >= today:
        return "Today"
    if day == today - timedelta(days=1):
        return "Yesterday"
    if day > today - timedelta(days=7):
        return "Previous 7 days"
    if day > today - timedelta(days=30):
        return "Previous 30 days"
    return "Older"


_TITLE = Qt.ItemDataRole.UserRole + 2
_WHERE = Qt.ItemDataRole.UserRole + 3
_SNIPPET = Qt.ItemDataRole.UserRole + 4
_PAD = 8


class _HitDelegate(QStyledItemDelegate):
    """Paints a search hit: the conversation's title (elided), where it matched, and the snippet
    with the matches in bold, wrapped to the list's width. Painting rather than a widget per hit
    keeps a search over thousands of conversations at list speed."""

    def __init__(self, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self._docs: dict[tuple[str, int], QTextDocument] = {}

    def _doc(self, html_text: str, width: int, font: QFont) -> QTextDocument:
        key = (html_text, width)
        doc = self._docs.get(key)
        if doc is None:
            if len(self._docs) > 500:
                self._docs.clear()
            doc = QTextDocument()
            doc.setDefaultFont(font)
            doc.setDocumentMargin(0)
            doc.setDefaultStyleSheet(
                f"body {{ color: {style.current().muted}; }} b {{ color: {style.current().text}; }}"
            )
            doc.setHtml(f"<body>{html_text}</body>")
            doc.setTextWidth(width)
            self._docs[key] = doc
        return doc

    def sizeHint(self, option: QStyleOptionViewItem, index: QModelIndex | QPersistentModelIndex) -> QSize:
        width = max(60, option.rect.width() or self.parent().viewport().width()) - 2 * _PAD  # type: ignore[union-attr]
        fm = QFontMetrics(option.font)
        doc = self._doc(str(index.data(_SNIPPET)), width, option.font)
        return QSize(width, _PAD + fm.height() + 3 + math.ceil(doc.size().height()) + _PAD)

    def paint(
        self, painter: QPainter, option: QStyleOptionViewItem, index: QModelIndex | QPersistentModelIndex
    ) -> None:
        opt = QStyleOptionViewItem(option)
        self.initStyleOption(opt, index)
        opt.text = ""
        widget = opt.widget
        (widget.style() if widget else QApplication.style()).drawControl(
            QStyle.ControlElement.CE_ItemViewItem, opt, painter, widget
        )
        r = option.rect.adjusted(_PAD, _PAD, -_PAD, -_PAD)
        painter.save()
        fm = QFontMetrics(option.font)
        where = str(index.data(_WHERE))
        where_w = fm.horizontalAdvance(where)
        bold = QFont(option.font)
        bold.setBold(True)
        painter.setFont(bold)
        painter.setPen(style.qcolor("text"))
        title = QFontMetrics(bold).elidedText(
            str(index.data(_TITLE)), Qt.TextElideMode.ElideRight, r.width() - where_w - 8
        )
        painter.drawText(r.x(), r.y() + fm.ascent(), title)
        painter.setFont(option.font)
        painter.setPen(style.qcolor("muted"))
        painter.drawText(r.right() - where_w, r.y() + fm.ascent(), where)
        doc = self._doc(str(index.data(_SNIPPET)), r.width(), option.font)
        painter.translate(r.x(), r.y() + fm.height() + 3)
        doc.drawContents(painter)
        painter.restore()


class _ThemedList(QListWidget):
    """The search results: their snippets are cached documents with the theme's colours."""

    def theme_changed(self, _palette: object) -> None:
        delegate = self.itemDelegate()
        if isinstance(delegate, _HitDelegate):
            delegate._docs.clear()
        self.viewport().update()


class Sidebar(QFrame):
    """History and search over the store. It only reads; changes go out as signals."""

    new_chat_requested = Signal()
    conversation_selected = Signal(int)
    hit_selected = Signal(int, int)  # conversation id, message id
    rename_requested = Signal(int, str)
    delete_requested = Signal(int)
    export_requested = Signal(int)

    def __init__(self, store: Store, parent: QWidget | None = None) -> None:
        super().__init__(parent, objectName="Sidebar")
        self.store = store
        self._current: int | None = None
        self._loaded_all = False
        self._last: ConversationRow | None = None
        self._renaming: int | None = None
        lay = QVBoxLayout(self)
        lay.setContentsMargins(10, 10, 10, 8)
        lay.setSpacing(8)

        self.new_button = QPushButton("New chat", objectName="NewChatButton")
        self.new_button.setIcon(style.icon("plus"))
        self.new_button.setIconSize(QSize(16, 16))
        self.new_button.setCursor(Qt.CursorShape.PointingHandCursor)
        self.new_button.setToolTip("Start a new conversation (Ctrl+N)")
        self.new_button.clicked.connect(self.new_chat_requested)
        lay.addWidget(self.new_button)

        self.search = QLineEdit(objectName="SearchBox")
        self.search.setAccessibleName("Search conversations")
        self.search.setProperty("ownFocusRing", True)  # its border lights up (style.qss)
        self.search.setPlaceholderText("Search conversations")
        self.search.setClearButtonEnabled(True)
        self.search.addAction(style.icon("search"), QLineEdit.ActionPosition.LeadingPosition)
        self.search.textChanged.connect(self._schedule_search)
        self.search.returnPressed.connect(self.run_search)
        lay.addWidget(self.search)
        self._search_timer = QTimer(self)
        self._search_timer.setSingleShot(True)
        self._search_timer.setInterval(SEARCH_DELAY_MS)
        self._search_timer.timeout.connect(self.run_search)

        self.stack = QStackedWidget()
        self.list = QListWidget(objectName="ConversationList")
        self.list.setAccessibleName("Conversations")
        self.list.setEditTriggers(QAbstractItemView.EditTrigger.NoEditTriggers)
        self.list.setContextMenuPolicy(Qt.ContextMenuPolicy.CustomContextMenu)
        self.list.customContextMenuRequested.connect(self._context_menu)
        self.list.itemClicked.connect(self._on_item)
        self.list.itemActivated.connect(self._on_item)
        self.list.itemChanged.connect(self._on_item_changed)
        self.list.verticalScrollBar().valueChanged.connect(self._maybe_load_more)
        self.list.setVerticalScrollMode(QAbstractItemView.ScrollMode.ScrollPerPixel)
        self.list.setHorizontalScrollBarPolicy(Qt.ScrollBarPolicy.ScrollBarAlwaysOff)
        self.list.setTextElideMode(Qt.TextElideMode.ElideRight)
        self.list.setUniformItemSizes(False)
        self.results = _ThemedList(objectName="SearchResults")
        self.results.setAccessibleName("Search results")
        self.results.setVerticalScrollMode(QAbstractItemView.ScrollMode.ScrollPerPixel)
        self.results.setHorizontalScrollBarPolicy(Qt.ScrollBarPolicy.ScrollBarAlwaysOff)
        self.results.setItemDelegate(_HitDelegate(self.results))
        self.results.setResizeMode(QListWidget.ResizeMode.Adjust)
        self.results.setUniformItemSizes(False)
        self.results.setWordWrap(True)
        self.results.itemClicked.connect(self._on_hit)
        self.results.itemActivated.connect(self._on_hit)
        self.no_results = QLabel("", objectName="SidebarNote")
        self.no_results.setWordWrap(True)
        self.no_results.setAlignment(Qt.AlignmentFlag.AlignHCenter | Qt.AlignmentFlag.AlignTop)
        results_page = QWidget()
        rl = QVBoxLayout(results_page)
        rl.setContentsMargins(0, 0, 0, 0)
        rl.addWidget(self.no_results)
        rl.addWidget(self.results, 1)
        self.stack.addWidget(self.list)
        self.stack.addWidget(results_page)
        lay.addWidget(self.stack, 1)

        rename = QAction("Rename", self.list, shortcut=QKeySequence(Qt.Key.Key_F2))
        rename.setShortcutContext(Qt.ShortcutContext.WidgetShortcut)
        rename.triggered.connect(lambda: self._rename_current())
        self.list.addAction(rename)
        delete = QAction("Delete", self.list, shortcut=QKeySequence(QKeySequence.StandardKey.Delete))
        delete.setShortcutContext(Qt.ShortcutContext.WidgetShortcut)
        delete.triggered.connect(lambda: self._delete_current())
        self.list.addAction(delete)
        self.refresh()

    # --- the conversation list ------------------------------------------------------------------
    @property
    def has_conversations(self) -> bool:
        """Whether the list shows any chat (on a first start it has none)."""
        return self._last is not None

    def refresh(self) -> None:
        """Reload the list from the store (keeps the selection)."""
        self.list.blockSignals(True)
        self.list.clear()
        self.list.blockSignals(False)
        self._last = None
        self._loaded_all = False
        self._group = ""
        self._load_page()
        if self.search.text().strip():
            self.run_search()

    def _load_page(self) -> None:
        before = (self._last.updated, self._last.id) if self._last is not None else None
        try:
            rows = self.store.list_conversations(limit=LIST_PAGE, before=before)
        except StoreError:
            rows = []
        self.list.blockSignals(True)
        now = time.time()
        for row in rows:
            group = day_group(row.updated, now)
            if group != self._group:
                head = QListWidgetItem(group)
                head.setFlags(Qt.ItemFlag.NoItemFlags)
                head.setData(_CID, None)
                f = head.font()
                f.setPointSizeF(f.pointSizeF() - 1.5)
                f.setBold(True)
                head.setFont(f)
                self.list.addItem(head)
                self._group = group
            item = QListWidgetItem(row.display_title)
            item.setData(_CID, row.id)
            item.setToolTip(row.display_title)
            item.setFlags(item.flags() | Qt.ItemFlag.ItemIsEditable)
            self.list.addItem(item)
            if row.id == self._current:
                item.setSelected(True)
        self.list.blockSignals(False)
        if rows:
            self._last = rows[-1]
        self._loaded_all = len(rows) < LIST_PAGE

    def _maybe_load_more(self, value: int) -> None:
        bar = self.list.verticalScrollBar()
        if not self._loaded_all and value >= bar.maximum() - 40:
            self._load_page()

    def item_for(self, conversation_id: int) -> QListWidgetItem | None:
        for i in range(self.list.count()):
            item = self.list.item(i)
            if item.data(_CID) == conversation_id:
                return item
        return None

    def conversation_ids(self) -> list[int]:
        return [
            self.list.item(i).data(_CID) for i in range(self.list.count()) if self.list.item(i).data(_CID) is not None
        ]

    def set_current(self, conversation_id: int | None) -> None:
        self._current = conversation_id
        self.list.clearSelection()
        item = self.item_for(conversation_id) if conversation_id is not None else None
        if item is not None:
            item.setSelected(True)
            self.list.scrollToItem(item)

    def _on_item(self, item: QListWidgetItem) -> None:
        cid = item.data(_CID)
        if cid is not None and self._renaming != cid:
            self.conversation_selected.emit(int(cid))

    def _context_menu(self, pos: QPoint) -> None:
        item = self.list.itemAt(pos)
        cid = item.data(_CID) if item is not None else None
        if cid is None:
            return
        menu = QMenu(self)
        menu.addAction("Rename", lambda: self.start_rename(int(cid)))
        menu.addAction("Export…", lambda: self.export_requested.emit(int(cid)))
        menu.addSeparator()
        menu.addAction("Delete", lambda: self.delete_requested.emit(int(cid)))
        menu.exec(self.list.viewport().mapToGlobal(pos))

    def _rename_current(self) -> None:
        item = self.list.currentItem()
        if item is not None and item.data(_CID) is not None:
            self.start_rename(int(item.data(_CID)))

    def _delete_current(self) -> None:
        item = self.list.currentItem()
        if item is not None and item.data(_CID) is not None:
            self.delete_requested.emit(int(item.data(_CID)))

    def start_rename(self, conversation_id: int) -> None:
        item = self.item_for(conversation_id)
        if item is not None:
            self._renaming = conversation_id
            self.list.editItem(item)

    def _on_item_changed(self, item: QListWidgetItem) -> None:
        cid = item.data(_CID)
        if cid is None or self._renaming != cid:
            return
        self._renaming = None
        self.rename_requested.emit(int(cid), item.text())

    # --- search ---------------------------------------------------------------------------------
    def _schedule_search(self, text: str) -> None:
        if not text.strip():
            self._search_timer.stop()
            self.stack.setCurrentIndex(0)
            return
        self._search_timer.start()

    def run_search(self) -> None:
        self._search_timer.stop()
        text = self.search.text().strip()
        if not text:
            self.stack.setCurrentIndex(0)
            return
        try:
            hits = self.store.search(text, limit=SEARCH_LIMIT)
        except StoreError as exc:
            hits = []
            self.no_results.setText(str(exc))
        self.results.clear()
        for hit in hits:
            item = QListWidgetItem()
            item.setData(_CID, hit.conversation_id)
            item.setData(_MID, hit.message_id)
            item.setData(_TITLE, hit.conversation_title)
            item.setData(_WHERE, "reasoning" if hit.in_reasoning else ("you" if hit.role == "user" else "answer"))
            item.setData(_SNIPPET, snippet_to_html(hit.snippet))
            item.setToolTip(hit.conversation_title)
            self.results.addItem(item)
        if not hits:
            self.no_results.setText(f"No messages match “{text}”.")
        self.no_results.setVisible(not hits)
        self.stack.setCurrentIndex(1)

    @property
    def searching(self) -> bool:
        return self.stack.currentIndex() == 1

    def _on_hit(self, item: QListWidgetItem) -> None:
        self.hit_selected.emit(int(item.data(_CID)), int(item.data(_MID)))

    def hit_count(self) -> int:
        return self.results.count()

    def hit_html(self, index: int) -> str:
        """The snippet of hit `index` as shown (matches in <b>)."""
        return str(self.results.item(index).data(_SNIPPET))
